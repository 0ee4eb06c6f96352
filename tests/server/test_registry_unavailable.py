"""An MLflow that cannot be reached is a 503 with Retry-After, never a 500 (real sockets, nothing listening)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from hokusai.server.audit import AuditLog, Caller
from hokusai.server.db import Database
from hokusai.server.errors import ApiError
from hokusai.server.keys import Principal
from hokusai.server.models import AuditEvent
from hokusai.server.registry.claims import claim_token, get_token, transfer_token
from hokusai.server.registry.sources import fetch_run
from hokusai.server.registry.tokenized import Registration, register_tokenized_model
from hokusai.server.registry.versions import Source, create_model_version, outcome_unknown
from hokusai.server.runner import free_loopback_port
from hokusai.server.secrets import load_or_create_secrets
from hokusai.server.settings import Settings
from hokusai.server.upstream import Upstream

ALICE = Principal(
    key_id="key_1", owner="alice", scopes=frozenset({"read", "write"}), prefix="hk_live_x", expires_at=None
)


@pytest.fixture
def unreachable(tmp_path: Path) -> Iterator[Upstream]:
    settings = Settings(data_dir=tmp_path, upstream_connect_timeout_seconds=2.0)
    database = Database(settings.resolved_database_url)
    closed = f"http://127.0.0.1:{free_loopback_port()}"
    upstream = Upstream(closed, settings, load_or_create_secrets(settings), database)
    try:
        yield upstream
    finally:
        asyncio.run(upstream.aclose())
        database.close()


def test_an_unreachable_mlflow_is_503_with_retry_after(unreachable: Upstream) -> None:
    with pytest.raises(ApiError) as refused:
        asyncio.run(fetch_run(upstream=unreachable, principal=ALICE, run_id="abc"))

    assert (refused.value.status, refused.value.error_code) == (503, "TEMPORARILY_UNAVAILABLE")
    assert refused.value.headers == {"Retry-After": "2"}


def _answered_by(mlflow: Callable[[httpx.Request], httpx.Response], settings: Settings, database: Database) -> Upstream:
    """The API's client for an MLflow played by `mlflow`, in process (no sockets)."""
    upstream = Upstream("http://mlflow.test", settings, load_or_create_secrets(settings), database)
    upstream.client = httpx.AsyncClient(base_url="http://mlflow.test", transport=httpx.MockTransport(mlflow))
    return upstream


def test_a_version_mlflow_did_not_answer_for_in_time_is_not_undone(tmp_path: Path) -> None:
    # MLflow may commit the version after the API gave up: deleting the new model would delete that version too.
    sent: list[tuple[str, str]] = []

    def mlflow(request: httpx.Request) -> httpx.Response:
        sent.append((request.method, request.url.path))
        if request.url.path.endswith("/model-versions/create"):
            raise httpx.ReadTimeout("no answer", request=request)
        return httpx.Response(200, json={})

    async def register() -> None:
        settings = Settings(data_dir=tmp_path)
        database = Database(settings.resolved_database_url)
        upstream = _answered_by(mlflow, settings, database)
        try:
            await create_model_version(
                database=database,
                upstream=upstream,
                principal=ALICE,
                model_name="m",
                source=Source(uri="models:/m-1", run_id="r1", model_id="m-1"),
                tags={},
                description=None,
            )
        finally:
            await upstream.aclose()
            database.close()

    with pytest.raises(ApiError) as refused:
        asyncio.run(register())

    assert (refused.value.status, refused.value.error_code) == (504, "DEADLINE_EXCEEDED")
    assert outcome_unknown(refused.value)
    assert [method for method, _ in sent] == ["POST", "POST"]  # the model, the version; no DELETE of the model


class _RegistryStandIn:
    """MLflow's registry as a registration meets it: the model exists, search finds the versions kept here, and each
    `model-versions/create` gets the next scripted answer ("created", "timeout", "committed-then-timeout" or
    "refused")."""

    def __init__(self, *create_answers: str) -> None:
        self.create_answers = list(create_answers)
        self.versions: list[dict[str, object]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/registered-models/create"):
            return httpx.Response(400, json={"error_code": "RESOURCE_ALREADY_EXISTS", "message": "exists"})
        if path.endswith("/model-versions/search"):
            return httpx.Response(200, json={"model_versions": self.versions})
        if path.endswith("/model-versions/create"):
            return self._create(request)
        return httpx.Response(404, json={"error_code": "ENDPOINT_NOT_FOUND", "message": path})

    def _create(self, request: httpx.Request) -> httpx.Response:
        answer = self.create_answers.pop(0)
        if answer == "refused":
            return httpx.Response(403, json={"error_code": "PERMISSION_DENIED", "message": "no"})
        body = json.loads(request.content)
        version = {"name": body["name"], "version": "1", "source": body["source"], "tags": body["tags"]}
        self.versions.append(version)
        if answer == "created":
            return httpx.Response(200, json={"model_version": version})
        if answer == "timeout":
            self.versions.remove(version)
        raise httpx.ReadTimeout("no answer", request=request)


def _register(
    database: Database, tmp_path: Path, mlflow: _RegistryStandIn, *, model_uri: str, model_name: str = "m"
) -> None:
    registration = Registration.build(
        model_uri=model_uri,
        mlflow_run_id=None,
        artifact_path="model",
        model_name=model_name,
        token_id="TOK",
        metric_name="accuracy",
        baseline_value=0.5,
        tags=None,
        description=None,
        metadata={},
        strict=False,
    )

    async def register() -> None:
        settings = Settings(data_dir=tmp_path, mlflow_url="http://mlflow.test")
        upstream = _answered_by(mlflow, settings, database)
        try:
            await register_tokenized_model(
                database=database,
                upstream=upstream,
                audit=AuditLog(database),
                caller=Caller(principal=ALICE, request_id=None),
                registration=registration,
            )
        finally:
            await upstream.aclose()

    asyncio.run(register())


def _claim_outcomes(database: Database) -> list[str]:
    with database.session() as session:
        claims = select(AuditEvent).where(AuditEvent.action == "token.claim").order_by(AuditEvent.id)
        return [event.outcome for event in session.scalars(claims)]


def test_a_claim_kept_by_a_timed_out_creation_stays_its_owners_and_moves_with_their_next_model(
    database: Database, tmp_path: Path
) -> None:
    # MLflow may still be making the version when the retry fails: nothing may conclude that none will exist.
    mlflow = _RegistryStandIn("timeout", "refused", "created")

    with pytest.raises(ApiError) as timed_out:
        _register(database, tmp_path, mlflow, model_uri="s3://bucket/model")
    with pytest.raises(ApiError) as refused:
        _register(database, tmp_path, mlflow, model_uri="s3://bucket/model")
    kept = get_token(database, token_id="TOK")
    _register(database, tmp_path, mlflow, model_uri="s3://bucket/model", model_name="m2")

    assert (timed_out.value.status, refused.value.status) == (504, 403)
    assert kept is not None and (kept.owner, kept.model_name) == ("alice", "m")
    moved = get_token(database, token_id="TOK")
    assert moved is not None and (moved.owner, moved.model_name) == ("alice", "m2")  # no version of m carried it
    assert _claim_outcomes(database) == ["ok", "moved"]


def test_a_transferred_claim_survives_its_new_owners_failed_first_registration(
    database: Database, tmp_path: Path
) -> None:
    claim_token(database, token_id="TOK", model_name="old", owner="bob")
    assert transfer_token(database, token_id="TOK", new_owner="alice", model_name="m") is not None
    mlflow = _RegistryStandIn("refused")

    with pytest.raises(ApiError) as refused:
        _register(database, tmp_path, mlflow, model_uri="s3://bucket/model")

    assert refused.value.status == 403
    held = get_token(database, token_id="TOK")
    assert held is not None and (held.owner, held.model_name) == ("alice", "m")  # what the admin decided stands
    assert _claim_outcomes(database) == []


def test_a_claim_a_timed_out_version_carries_after_all_stays_when_a_retry_fails(
    database: Database, tmp_path: Path
) -> None:
    mlflow = _RegistryStandIn("committed-then-timeout", "refused")

    with pytest.raises(ApiError):
        _register(database, tmp_path, mlflow, model_uri="s3://bucket/model")
    with pytest.raises(ApiError) as refused:
        _register(database, tmp_path, mlflow, model_uri="s3://bucket/other-model")  # another source: a new version

    assert refused.value.status == 403
    held = get_token(database, token_id="TOK")
    assert held is not None and (held.owner, held.model_name) == ("alice", "m")  # version 1 carries it
    assert _claim_outcomes(database) == ["ok"]
