"""An MLflow that cannot be reached is a 503 with Retry-After, never a 500 (real sockets, nothing listening)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hokusai.server.db import Database
from hokusai.server.errors import ApiError
from hokusai.server.keys import Principal
from hokusai.server.registry import Source, create_model_version, fetch_run, outcome_unknown
from hokusai.server.secrets import load_or_create_secrets
from hokusai.server.settings import Settings
from hokusai.server.upstream import Upstream
from tests.support.platform import free_port

ALICE = Principal(
    key_id="key_1", owner="alice", scopes=frozenset({"read", "write"}), prefix="hk_live_x", expires_at=None
)


@pytest.fixture
def unreachable(tmp_path: Path) -> Iterator[Upstream]:
    settings = Settings(data_dir=tmp_path, upstream_connect_timeout_seconds=2.0)
    database = Database(settings.resolved_database_url)
    upstream = Upstream(f"http://127.0.0.1:{free_port()}", settings, load_or_create_secrets(settings), database)
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
        upstream = Upstream("http://mlflow.test", settings, load_or_create_secrets(settings), database)
        upstream.client = httpx.AsyncClient(base_url="http://mlflow.test", transport=httpx.MockTransport(mlflow))
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
