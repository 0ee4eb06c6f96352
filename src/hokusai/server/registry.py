"""The tokenized model registry: token claims in our database, model versions in MLflow, created as the caller.

Token claims are race-free because they rest on the primary-key insert alone: whoever inserts the row owns the
token, and everyone else reads the winner back (an idempotent success for the same owner and model, else 409).
Every MLflow call is made with the caller's own identity, so MLflow's permissions decide what they may read and
write, and the caller becomes MANAGE on a registered model they create.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote

import httpx
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from hokusai.errors import HokusaiValidationError
from hokusai.server.audit import AuditLog
from hokusai.server.db import Database
from hokusai.server.errors import LAYER_MLFLOW, RETRY_AFTER_SECONDS, ApiError, mlflow_call_failed
from hokusai.server.keys import KeyStore, Principal
from hokusai.server.locks import shared_lock
from hokusai.server.mlflow_rest import (
    call_as,
    checked_page_token,
    ensure_account,
    filter_equals,
    filter_in,
    mlflow_error,
    mlflow_message,
    send_as,
)
from hokusai.server.models import Token, utcnow
from hokusai.server.schemas import BaselineInfo, BaselineList, TokenizedModelInfo, TokenizedModelList
from hokusai.server.upstream import PLATFORM, Upstream, UpstreamError
from hokusai.validation import (
    BASELINE_MODELS_FILTER,
    MODEL_URI_MAX_LENGTH,
    REGISTRATION_CONFLICT,
    TAG_BASELINE,
    TAG_IS_BASELINE,
    TAG_METADATA,
    TAG_METRIC,
    TAG_METRICS,
    TAG_MODEL_TYPE,
    TAG_REGISTERED_BY,
    TAG_RUN_ID,
    TAG_TOKEN_ID,
    TAG_VALUE_MAX_LENGTH,
    TOKEN_MODEL_GONE,
    ModelsUri,
    baseline_check,
    baseline_model_name,
    baseline_model_type,
    baseline_repeat_leaves_out,
    is_baseline_model_name,
    normalize_model_type,
    normalize_token_id,
    parse_models_uri,
    repeat_conflict,
    repeat_leaves_out,
    run_id_from_uri,
    token_not_held,
    tokenized_tags,
    uri_scheme,
    validate_baseline_value,
    validate_description,
    validate_metadata,
    validate_metadata_fields,
    validate_metric_name,
    validate_model_name,
    validate_model_uri,
    validate_run_id,
    validate_tokenized_model_name,
    validate_user_tags,
    validate_version,
)

logger = logging.getLogger(__name__)

RUNS_GET = "/api/2.0/mlflow/runs/get"
ARTIFACTS_LIST = "/api/2.0/mlflow/artifacts/list"
LOGGED_MODELS_SEARCH = "/api/2.0/mlflow/logged-models/search"
LOGGED_MODELS_GET = "/api/2.0/mlflow/logged-models/{model_id}"
REGISTERED_MODELS_CREATE = "/api/2.0/mlflow/registered-models/create"
REGISTERED_MODELS_DELETE = "/api/2.0/mlflow/registered-models/delete"
REGISTERED_MODELS_GET = "/api/2.0/mlflow/registered-models/get"
REGISTERED_MODELS_ALIAS = "/api/2.0/mlflow/registered-models/alias"
MODEL_VERSIONS_CREATE = "/api/2.0/mlflow/model-versions/create"
MODEL_VERSIONS_GET = "/api/2.0/mlflow/model-versions/get"
MODEL_VERSIONS_SEARCH = "/api/2.0/mlflow/model-versions/search"
MODEL_VERSIONS_SET_TAG = "/api/2.0/mlflow/model-versions/set-tag"

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# MLflow is reached with GET for searches; the filter travels in the URL, which its server caps (h11: 16 KiB).
_MAX_FILTER_LENGTH = 8000
_SEARCH_PAGE_SIZE = 1000
_MLMODEL = "MLmodel"
_MLFLOW_RUN_ID_RE = re.compile(r"[0-9a-f]{32}")  # what MLflow's stores generate (uuid4 hex)
_ORDER = ["name ASC", "version_number ASC"]
_CLAIM_ATTEMPTS = 3
# One lock per token while a request looks for its version and creates it (`locks.shared_lock`, across API
# processes on PostgreSQL): a client that retries a slow POST (the SDK does) then finds the first request's version
# instead of adding a twin. The repeat is recognised by its model, token and source; the SDK's Idempotency-Key
# header is not read. And one lock per registered model while it may be created and get its version (see
# `create_model_version`).
_TOKEN_LOCK = "registry.token:"
_MODEL_LOCK = "registry.model:"
# And one per model type while a baseline request looks for its version and adds it: a repeat finds the first.
_BASELINE_LOCK = "registry.baseline:"


@dataclass(frozen=True)
class RunFacts:
    """What registration needs to know about an MLflow run."""

    run_id: str
    experiment_id: str
    artifact_uri: str
    metrics: dict[str, float]
    model_steps: dict[str, int]  # logged model id -> the step it was logged at


async def fetch_run(*, upstream: Upstream, principal: Principal, run_id: str) -> RunFacts:
    """The run as the caller sees it.

    Where the default permission is below READ, MLflow answers 403 for a run that does not exist as well as for
    one the caller may not read (so run ids cannot be probed); the message says so.
    """
    try:
        payload = await call_as(
            upstream, principal, "GET", RUNS_GET, params={"run_id": run_id}, action=f"read run '{run_id}'"
        )
    except ApiError as exc:
        if exc.status == 404:
            hinted = exc.message + _unlike_a_run_id(run_id)
            raise ApiError(404, hinted, error_code=exc.error_code, layer=exc.layer) from exc
        if exc.status != 403:
            raise
        raise ApiError(
            403,
            f"Run '{run_id}' does not exist, or your account may not read it (MLflow does not say which). "
            f"Check the run id, or ask the run's owner for READ on its experiment.{_unlike_a_run_id(run_id)}",
            error_code="PERMISSION_DENIED",
            layer=LAYER_MLFLOW,
        ) from exc
    run = payload.get("run", {})
    info, data = run.get("info", {}), run.get("data", {})
    outputs = run.get("outputs", {}).get("model_outputs", [])
    return RunFacts(
        run_id=run_id,
        experiment_id=str(info.get("experiment_id", "")),
        artifact_uri=str(info.get("artifact_uri", "")),
        metrics=_numbers(data.get("metrics", []), key="key", value="value"),
        model_steps={name: int(step) for name, step in _numbers(outputs, key="model_id", value="step").items()},
    )


def _unlike_a_run_id(run_id: str) -> str:
    """A hint when `run_id` is not what MLflow makes: `runs:/None/model` (an unset variable), `runs:/model`."""
    if _MLFLOW_RUN_ID_RE.fullmatch(run_id):
        return ""
    return (
        f" '{run_id}' does not look like a run id, which is 32 hex characters (run.info.run_id); a runs:/ URI is "
        "runs:/<run id>/<artifact path>."
    )


def _numbers(items: list[dict[str, Any]], *, key: str, value: str) -> dict[str, float]:
    """`{item[key]: item[value]}` for the items whose value is a number (MLflow may send NaN as a string)."""
    numbers: dict[str, float] = {}
    for item in items:
        try:
            numbers[str(item[key])] = float(item[value])
        except (KeyError, TypeError, ValueError):
            continue
    return numbers


@dataclass(frozen=True)
class Source:
    """What MLflow is told to register: `model-versions/create`'s source, run_id and model_id."""

    uri: str
    run_id: str | None
    model_id: str | None


async def resolve_source(*, upstream: Upstream, principal: Principal, model_uri: str, run: RunFacts | None) -> Source:
    """The source MLflow can load, resolved as `mlflow.register_model` does on the client.

    MLflow's server stores a `runs:/` source verbatim, and a version whose source is `runs:/<id>/model` is not
    loadable when the model was logged the MLflow 3 way (as a logged model, outside the run's artifacts). So:
    an MLmodel file at that path in the run's artifacts gives the run's artifact location; otherwise the run's
    logged model of that name gives `models:/<model id>`. Other URIs go to MLflow as given.
    """
    if run is not None and run_id_from_uri(model_uri) is not None:
        artifact_path = model_uri.split("/", 2)[2].strip("/") if model_uri.count("/") >= 2 else ""
        return await _run_model_source(upstream=upstream, principal=principal, run=run, artifact_path=artifact_path)
    parsed = parse_models_uri(model_uri)
    return Source(uri=model_uri, run_id=run.run_id if run else None, model_id=parsed.model_id if parsed else None)


@dataclass(frozen=True)
class LocatedSource:
    """Where a registration's source comes from: the URI as MLflow will store it, and the run behind it."""

    uri: str
    run_id: str | None
    derived: bool  # the run was read from a logged model or a version, not named by a `runs:/` URI


async def locate_source(*, upstream: Upstream, principal: Principal, model_uri: str) -> LocatedSource:
    """The source's run, read as the caller; `run_id` is `None` for a source without one (an `s3://` path).

    A `runs:/` URI names it; a `models:/<model id>` was logged in it (as `mlflow.register_model` reads it); a
    registered version (`models:/<name>/<version>`, `/latest`, `@<alias>`) records it. With it, every kind of
    source gets the same baseline check and `mlflow_run_id` tag. An alias or `latest` is pinned to the version it
    names now, as MLflow stores it, so that a repeat finds the version it made.
    """
    run_id = run_id_from_uri(model_uri)
    parsed = parse_models_uri(model_uri)
    if run_id is not None or parsed is None:
        return LocatedSource(uri=model_uri, run_id=run_id, derived=False)
    if parsed.model_id is not None:
        payload = await call_as(
            upstream,
            principal,
            "GET",
            LOGGED_MODELS_GET.format(model_id=quote(parsed.model_id, safe="")),
            action=f"read logged model '{parsed.model_id}'",
        )
        run_id = payload.get("model", {}).get("info", {}).get("source_run_id") or None
        return LocatedSource(uri=model_uri, run_id=run_id, derived=True)
    version = await _registered_version(upstream=upstream, principal=principal, parsed=parsed)
    if version is None:
        return LocatedSource(uri=model_uri, run_id=None, derived=True)
    pinned = parsed.alias is not None or parsed.version is None
    uri = f"models:/{parsed.name}/{version.get('version')}" if pinned else model_uri
    return LocatedSource(uri=uri, run_id=version.get("run_id") or None, derived=True)


async def _registered_version(*, upstream: Upstream, principal: Principal, parsed: ModelsUri) -> dict[str, Any] | None:
    """The model version a registered-model URI names; `None` for a stage (MLflow's deprecated stages)."""
    name = str(parsed.name)
    if parsed.alias is not None:
        path, params, action = REGISTERED_MODELS_ALIAS, {"alias": parsed.alias}, f"read alias '{parsed.alias}'"
    elif parsed.version is not None:
        path, params, action = MODEL_VERSIONS_GET, {"version": parsed.version}, f"read version {parsed.version}"
    elif parsed.stage is not None:
        return None
    else:
        latest = f"name IN {filter_in([name])}"
        return await _latest_version(upstream=upstream, principal=principal, filter_string=latest)
    payload = await call_as(
        upstream, principal, "GET", path, params={"name": name, **params}, action=f"{action} of model '{name}'"
    )
    return payload.get("model_version")


async def _run_model_source(*, upstream: Upstream, principal: Principal, run: RunFacts, artifact_path: str) -> Source:
    listing = await call_as(
        upstream,
        principal,
        "GET",
        ARTIFACTS_LIST,
        params={"run_id": run.run_id, "path": artifact_path},
        action=f"list the artifacts of run '{run.run_id}'",
    )
    mlmodel = f"{artifact_path}/{_MLMODEL}" if artifact_path else _MLMODEL
    if any(item.get("path") == mlmodel for item in listing.get("files", [])):
        location = f"{run.artifact_uri}/{artifact_path}" if artifact_path else run.artifact_uri
        return Source(uri=location, run_id=run.run_id, model_id=None)
    model_ids = await _logged_models_named(upstream=upstream, principal=principal, run=run, name=artifact_path)
    if not model_ids:
        raise ApiError(
            404,
            f"Run '{run.run_id}' has no model at '{artifact_path}': no MLmodel file there and no logged model of "
            "that name. Pass the `name` given to log_model as the artifact path.",
            error_code="RESOURCE_DOES_NOT_EXIST",
        )
    # As the MLflow client does: several logged models of one name -> the one logged at the highest step.
    model_id = max(model_ids, key=lambda candidate: run.model_steps.get(candidate, -1))
    return Source(uri=f"models:/{model_id}", run_id=run.run_id, model_id=model_id)


async def _logged_models_named(*, upstream: Upstream, principal: Principal, run: RunFacts, name: str) -> list[str]:
    # Filtered by run id (a validated id), and the name compared here, so no user text enters the filter.
    body: dict[str, Any] = {
        "experiment_ids": [run.experiment_id],
        "filter": f"source_run_id = {filter_equals(run.run_id)}",
        "max_results": 100,
    }
    model_ids: list[str] = []
    while True:
        page = await call_as(
            upstream,
            principal,
            "POST",
            LOGGED_MODELS_SEARCH,
            body=body,
            action=f"search the logged models of run '{run.run_id}'",
        )
        model_ids += [
            model["info"]["model_id"] for model in page.get("models", []) if model.get("info", {}).get("name") == name
        ]
        if not page.get("next_page_token"):
            return model_ids
        body["page_token"] = page["next_page_token"]


async def ensure_registered_model(*, upstream: Upstream, principal: Principal, model_name: str) -> bool:
    """Create the registered model as the caller (who becomes MANAGE on it); an existing one is fine.

    Returns whether it was created by this call.
    """
    response = await send_as(upstream, principal, "POST", REGISTERED_MODELS_CREATE, body={"name": model_name})
    if response.status_code == 200:
        return True
    if response.status_code == 400 and mlflow_message(response)[0] == "RESOURCE_ALREADY_EXISTS":
        return False
    raise mlflow_error(response, f"create registered model '{model_name}'")


async def create_model_version(
    *,
    database: Database,
    upstream: Upstream,
    principal: Principal,
    model_name: str,
    source: Source,
    tags: Mapping[str, str],
    description: str | None,
) -> dict[str, Any]:
    """Create the registered model if needed, then the version in one call with every tag (never half-tagged).

    When MLflow refuses the version (a source it does not accept, say), a registered model created for it here is
    deleted again, so a failed registration leaves no empty model behind. The per-model lock keeps another
    registration in this process from adding a version to that model in between.
    """
    body: dict[str, Any] = {
        "name": model_name,
        "source": source.uri,
        "tags": [{"key": key, "value": value} for key, value in tags.items()],
    }
    if source.run_id is not None:
        body["run_id"] = source.run_id
    if source.model_id is not None:
        body["model_id"] = source.model_id
    if description is not None:
        body["description"] = description
    async with shared_lock(database, _MODEL_LOCK + model_name):
        created_model = await ensure_registered_model(upstream=upstream, principal=principal, model_name=model_name)
        try:
            payload = await call_as(
                upstream,
                principal,
                "POST",
                MODEL_VERSIONS_CREATE,
                body=body,
                action=f"create a version of model '{model_name}'",
            )
        except ApiError as exc:
            if outcome_unknown(exc):
                raise VersionOutcomeUnknown(
                    exc.status, exc.message, error_code=exc.error_code, layer=exc.layer, headers=exc.headers
                ) from exc
            if created_model:
                await _delete_empty_model(upstream=upstream, principal=principal, model_name=model_name)
            raise
    return dict(payload.get("model_version", {}))


def outcome_unknown(exc: ApiError) -> bool:
    """MLflow took the request and did not answer in time: it may still have done it, so nothing is undone."""
    return exc.status == 504


class VersionOutcomeUnknown(ApiError):
    """MLflow did not answer the version's creation in time: the version may exist, carrying the token's claim.

    Only this call's timeout leaves a claim in place; after any other (a search, the rights check) nothing can carry
    the claim yet, and keeping it would hand a retry a claim it did not take (security review, 2026-11-28).

    The kept claim stays its owner's even if a later attempt fails: MLflow may still be creating that version, so no
    later request can tell that it made none, and a claim found, not taken, by a request may be one an admin
    transferred to a model with no version yet (review, 2026-11-28: releasing such claims was tried and undone). The
    owner moves it by registering the token on another model (`_move_stale_claim`); an admin can release it.
    """


async def _delete_empty_model(*, upstream: Upstream, principal: Principal, model_name: str) -> None:
    try:
        response = await send_as(upstream, principal, "DELETE", REGISTERED_MODELS_DELETE, body={"name": model_name})
    except ApiError:
        response = None
    if response is None or response.status_code != 200:
        # The registration's own error is what the caller needs; the leftover is only logged.
        logger.warning("could not delete the empty registered model %r after a refused version", model_name)


async def _search_versions(
    *,
    upstream: Upstream,
    principal: Principal,
    filter_string: str,
    max_results: int,
    page_token: str | None = None,
    order_by: list[str] | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    params: dict[str, str | int | list[str]] = {
        "filter": filter_string,
        "max_results": max_results,
        "order_by": order_by or _ORDER,
    }
    if page_token:
        params["page_token"] = checked_page_token(page_token)
    payload = await call_as(
        upstream, principal, "GET", MODEL_VERSIONS_SEARCH, params=params, action="search model versions"
    )
    return list(payload.get("model_versions", [])), payload.get("next_page_token") or None


def _versions_carrying(model_name: str, token_id: str) -> str:
    """The search filter for the versions of `model_name` tagged with `token_id`."""
    return f"name IN {filter_in([model_name])} AND tags.{TAG_TOKEN_ID} = {filter_equals(token_id)}"


async def _model_carries(*, upstream: Upstream, principal: Principal, model_name: str, token_id: str) -> bool:
    """Whether a version of `model_name` that the caller can see is tagged with `token_id`."""
    carriers, _ = await _search_versions(
        upstream=upstream, principal=principal, filter_string=_versions_carrying(model_name, token_id), max_results=1
    )
    return bool(carriers)


async def find_existing_version(
    *, upstream: Upstream, principal: Principal, model_name: str, token_id: str, source: str
) -> dict[str, Any] | None:
    """The version of `model_name` already registered for `token_id` from `source`, if any (the idempotency key)."""
    filter_string = _versions_carrying(model_name, token_id)
    page_token = None
    while True:
        versions, page_token = await _search_versions(
            upstream=upstream,
            principal=principal,
            filter_string=filter_string,
            max_results=_SEARCH_PAGE_SIZE,
            page_token=page_token,
        )
        for version in versions:
            if version.get("name") == model_name and version.get("source") == source:
                return version
        if page_token is None:
            return None


# --- shaping MLflow's answers --------------------------------------------------------------------------------------


def version_tags(version: Mapping[str, Any]) -> dict[str, str]:
    return {str(tag["key"]): str(tag.get("value", "")) for tag in version.get("tags", []) if "key" in tag}


def tokenized_info(
    version: Mapping[str, Any], *, warnings: list[str] | None = None, created: bool = False
) -> TokenizedModelInfo | None:
    """A version as the API shows it; `None` when its Hokusai tags are missing or unreadable."""
    tags = version_tags(version)
    token_id, metric_name, baseline = tags.get(TAG_TOKEN_ID), tags.get(TAG_METRIC), tags.get(TAG_BASELINE)
    if not token_id or not metric_name or baseline is None:
        return None
    try:
        baseline_value = validate_baseline_value(float(baseline))
    except ValueError:
        return None
    name, number = str(version.get("name", "")), str(version.get("version", ""))
    return TokenizedModelInfo(
        model_name=name,
        version=number,
        token_id=token_id,
        metric_name=metric_name,
        baseline_value=baseline_value,
        run_id=version.get("run_id") or None,
        model_uri=f"models:/{name}/{number}",
        source=str(version.get("source", "")),
        tags=tags,
        warnings=warnings or [],
        created=created,
    )


def metrics_tags(metrics: Mapping[str, float]) -> dict[str, str]:
    """A baseline's run metrics as one JSON tag, cut (by name order) to fit MLflow's tag value limit."""
    kept: dict[str, float | None] = {}
    for name in sorted(metrics):
        value = metrics[name]
        candidate = {**kept, name: value if math.isfinite(value) else None}
        if len(_compact_json(candidate)) > TAG_VALUE_MAX_LENGTH:
            break
        kept = candidate
    return {TAG_METRICS: _compact_json(kept)}


def _compact_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


# --- token claims (database) ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenClaim:
    token: Token
    created: bool  # False: the caller already held the token, for this model or (see `moved_from`) another
    moved_from: str | None = None  # the model the caller's released claim was moved from, to this one

    @property
    def taken(self) -> bool:
        """True when this registration made or moved the claim: a failure undoes it."""
        return self.created or self.moved_from is not None


class TokenHeld(ApiError):
    """409: another model holds the token; `holder` is its claim, for the caller's own stale-claim check."""

    def __init__(self, holder: Token, *, model_name: str, owner: str) -> None:
        # Names the holding model, never its owner: accounts are not disclosed to other users.
        if holder.model_name == model_name and holder.owner != owner:
            # "claimed by model 'x'" would name the very model the caller asked for, and read as nonsense.
            # Nor may it say the model exists: a claim outlives its model, which may since have been deleted.
            where = (
                f"another account, under model name '{holder.model_name}' (model names are shared by everyone, as in "
                "MLflow)"
            )
        else:
            where = f"model '{holder.model_name}'"
        super().__init__(
            409,
            f"Token '{holder.token_id}' is already claimed by {where}. A token belongs to one model: choose another "
            "token id, or ask an admin to transfer this one.",
            error_code="TOKEN_ALREADY_CLAIMED",
        )
        self.holder = holder


def claim_token(database: Database, *, token_id: str, model_name: str, owner: str) -> TokenClaim:
    """Claim `token_id` for `owner`'s `model_name`, or confirm they hold it; `TokenHeld` when another model does."""
    for _ in range(_CLAIM_ATTEMPTS):
        now = utcnow()
        token = Token(token_id=token_id, model_name=model_name, owner=owner, created_at=now, updated_at=now)
        try:
            with database.session() as session:
                session.add(token)
            return TokenClaim(token=token, created=True)
        except IntegrityError:
            pass  # someone holds it: read the holder back below
        holder = get_token(database, token_id=token_id)
        if holder is None:
            continue  # released between our insert and our read: try the insert again
        if holder.owner == owner and holder.model_name == model_name:
            return TokenClaim(token=holder, created=False)
        raise TokenHeld(holder, model_name=model_name, owner=owner)
    raise ApiError(503, "The token registry is busy; retry.", headers={"Retry-After": RETRY_AFTER_SECONDS})


def get_token(database: Database, *, token_id: str) -> Token | None:
    with database.session() as session:
        return session.get(Token, token_id)


def release_token(
    database: Database, *, token_id: str, owner: str | None = None, model_name: str | None = None
) -> Token | None:
    """Delete the claim (only if it still has `owner`/`model_name`, when given); the deleted row or `None`."""
    with database.session() as session:
        token = session.get(Token, token_id, with_for_update=True)
        if token is None or (owner is not None and token.owner != owner):
            return None
        if model_name is not None and token.model_name != model_name:
            return None
        session.delete(token)
        return token


def transfer_token(
    database: Database, *, token_id: str, new_owner: str, model_name: str | None = None
) -> tuple[Token, str] | None:
    """Give the token to `new_owner` (and `model_name`); the updated row and the previous owner, or `None`."""
    with database.session() as session:
        token = session.get(Token, token_id, with_for_update=True)
        if token is None:
            return None
        previous_owner = token.owner
        token.owner = new_owner
        token.model_name = model_name or token.model_name
        token.updated_at = utcnow()
        return token, previous_owner


def move_claim(database: Database, *, token_id: str, owner: str, from_model: str, to_model: str) -> Token | None:
    """Point `owner`'s claim from `from_model` to `to_model`; `None` when the claim is no longer that one."""
    with database.session() as session:
        token = session.get(Token, token_id, with_for_update=True)
        if token is None or (token.owner, token.model_name) != (owner, from_model):
            return None
        token.model_name = to_model
        token.updated_at = utcnow()
        return token


def follow_model_rename(database: Database, *, old_name: str, new_name: str, token_ids: Collection[str]) -> list[str]:
    """Point these tokens' claims on registered model `old_name` at `new_name`; the ids of the tokens that moved."""
    with database.session() as session:
        query = select(Token).where(Token.model_name == old_name, Token.token_id.in_(token_ids)).with_for_update()
        tokens = session.scalars(query).all()
        for token in tokens:
            token.model_name = new_name
            token.updated_at = utcnow()
        return sorted(token.token_id for token in tokens)


def tokens_claiming_model(database: Database, *, model_name: str) -> list[str]:
    with database.session() as session:
        return sorted(session.scalars(select(Token.token_id).where(Token.model_name == model_name)))


async def follow_rename(
    *, database: Database, upstream: Upstream, principal: Principal, old_name: str, new_name: str
) -> list[str]:
    """Move the claims of a model MLflow has just renamed; the ids of the tokens that moved.

    Only the claims a version of the renamed model carries move: a claim left on the old name by a deleted model of
    that name (see `_move_stale_claim`) is not this model's, and following it would point a stranger's token at it.
    """
    carried = []
    for token_id in await run_in_threadpool(tokens_claiming_model, database, model_name=old_name):
        versions, _ = await _search_versions(
            upstream=upstream,
            principal=principal,
            filter_string=_versions_carrying(new_name, token_id),
            max_results=1,
        )
        if versions:
            carried.append(token_id)
    if not carried:
        return []
    return await run_in_threadpool(
        follow_model_rename, database, old_name=old_name, new_name=new_name, token_ids=carried
    )


def models_holding_tokens(
    database: Database, *, token_ids: Collection[str] | None = None, owner: str | None = None
) -> dict[str, str]:
    """Token id -> the registered model holding it, for these tokens and/or this owner's (all tokens if neither)."""
    query = select(Token.token_id, Token.model_name)
    if token_ids is not None:
        query = query.where(Token.token_id.in_(token_ids))
    if owner is not None:
        query = query.where(Token.owner == owner)
    with database.session() as session:
        return {token_id: model_name for token_id, model_name in session.execute(query)}


# --- registration ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Registration:
    """A validated `POST /api/v1/models/tokenized` body."""

    model_uri: str
    model_name: str
    token_id: str
    metric_name: str
    baseline_value: float
    tags: dict[str, str]
    description: str | None
    strict: bool

    @classmethod
    def build(
        cls,
        *,
        model_uri: str | None,
        mlflow_run_id: str | None,
        artifact_path: str,
        model_name: str,
        token_id: str,
        metric_name: str,
        baseline_value: float,
        tags: Mapping[str, object] | None,
        description: str | None,
        metadata: Mapping[str, object],
        strict: bool,
    ) -> Registration:
        """Apply :mod:`hokusai.validation`, the rules the SDK applies too."""
        if (model_uri is None) == (mlflow_run_id is None):
            raise HokusaiValidationError("model_uri", "give exactly one of model_uri and mlflow_run_id")
        if mlflow_run_id is not None:
            model_uri = f"runs:/{validate_run_id(mlflow_run_id)}/{artifact_path.strip('/')}"
        model_uri = _remote_source(validate_model_uri(model_uri))
        token = normalize_token_id(token_id)
        value = validate_baseline_value(baseline_value)
        metric = validate_metric_name(metric_name)
        all_tags = {
            **validate_user_tags(tags),
            **validate_metadata_fields(metadata),
            **tokenized_tags(
                token_id=token, metric_name=metric, baseline_value=value, run_id=run_id_from_uri(model_uri)
            ),
        }
        return cls(
            model_uri=model_uri,
            model_name=validate_tokenized_model_name(model_name),
            token_id=token,
            metric_name=metric,
            baseline_value=value,
            tags=all_tags,
            description=validate_description(description),
            strict=strict,
        )


def _remote_source(model_uri: str) -> str:
    """`model_uri`, unless it is a path on some machine's disk: MLflow's server refuses those without a run.

    Refused here, naming the field, before a token is claimed for it (MLflow's 400 named neither).
    """
    scheme = uri_scheme(model_uri)
    if _MLFLOW_RUN_ID_RE.fullmatch(model_uri):
        raise HokusaiValidationError(
            "model_uri",
            f"'{model_uri}' is a run id, not a model URI: use runs:/{model_uri}/model (or the name the run gave "
            "log_model in place of model), or give it as mlflow_run_id",
        )
    if scheme in ("", "file") or len(scheme) == 1:  # one letter: a Windows drive (`C:\\models\\churn`)
        raise HokusaiValidationError(
            "model_uri",
            f"'{model_uri}' is a local path, which the platform cannot load: use runs:/<run id>/<path>, "
            "models:/<model id> (what log_model returns), models:/<name>/<version>, or a storage URI such as s3://…",
        )
    return model_uri


@dataclass(frozen=True)
class Caller:
    """Who is asking, for MLflow (identity) and for the audit log."""

    principal: Principal
    request_id: str | None

    @classmethod
    def of(cls, request: Request, principal: Principal) -> Caller:
        return cls(principal=principal, request_id=getattr(request.state, "request_id", None))


async def audit_event(
    audit: AuditLog, caller: Caller, action: str, outcome: str, target: str, detail: Mapping[str, Any] | None = None
) -> None:
    await run_in_threadpool(
        audit.record,
        actor=caller.principal.owner,
        key_id=caller.principal.key_id,
        action=action,
        outcome=outcome,
        target=target,
        detail=detail,
        request_id=caller.request_id,
    )


async def _readable_run(*, upstream: Upstream, principal: Principal, located: LocatedSource) -> RunFacts | None:
    """The source's run; `None` when the caller may not read a run they did not name (a version's, a model's)."""
    try:
        return await fetch_run(upstream=upstream, principal=principal, run_id=str(located.run_id))
    except ApiError as exc:
        if not located.derived or exc.status not in (403, 404):
            raise
        return None


async def register_tokenized_model(
    *, database: Database, upstream: Upstream, audit: AuditLog, caller: Caller, registration: Registration
) -> TokenizedModelInfo:
    """Claim the token, then create the version in MLflow as the caller; a repeat returns the existing version."""
    principal = caller.principal
    await ensure_account(upstream=upstream, principal=principal)
    located = await locate_source(upstream=upstream, principal=principal, model_uri=registration.model_uri)
    run = None
    if located.run_id is not None:
        run = await _readable_run(upstream=upstream, principal=principal, located=located)
        if TAG_RUN_ID not in registration.tags:
            registration = replace(registration, tags={**registration.tags, TAG_RUN_ID: located.run_id})
    warnings = baseline_check(
        run_id=located.run_id,
        metrics=run.metrics if run else None,
        metric_name=registration.metric_name,
        baseline_value=registration.baseline_value,
        strict=registration.strict,
    )
    source = await resolve_source(upstream=upstream, principal=principal, model_uri=located.uri, run=run)
    if len(source.uri) > MODEL_URI_MAX_LENGTH:
        # A run's path becomes the run's artifact location plus that path: longer than the URI that was checked.
        raise HokusaiValidationError(
            "model_uri",
            f"resolves to the source '{source.uri[:80]}…' of {len(source.uri)} characters; MLflow keeps at most "
            f"{MODEL_URI_MAX_LENGTH}",
        )
    # One lock per token from the claim to the version: a claim is never moved (see `_move_stale_claim`) while
    # another request of its owner is still creating the version that will carry it.
    async with shared_lock(database, _TOKEN_LOCK + registration.token_id):
        claim = await _claim_audited(
            database=database, upstream=upstream, audit=audit, caller=caller, registration=registration
        )
        registered = undecided = False
        try:
            info = await _existing_or_new_version(
                database=database,
                upstream=upstream,
                principal=principal,
                registration=registration,
                source=source,
                warnings=warnings,
            )
            registered = True
        except VersionOutcomeUnknown:
            # The version may exist after all: the claim stays, so the retry finds the version as a repeat instead
            # of leaving a version whose token anyone could claim.
            undecided = True
            raise
        finally:
            if claim.taken and not registered and not undecided:
                await _roll_back_claim(
                    database=database, audit=audit, caller=caller, registration=registration, claim=claim
                )
    if info.created:
        detail = {"version": info.version, "source": info.source, "token_id": info.token_id}
        await audit_event(audit, caller, "model.register", "ok", f"{info.model_name}/{info.version}", detail)
    return info


async def _claim_audited(
    *, database: Database, upstream: Upstream, audit: AuditLog, caller: Caller, registration: Registration
) -> TokenClaim:
    detail = {"model_name": registration.model_name}
    try:
        claim = await run_in_threadpool(
            claim_token,
            database,
            token_id=registration.token_id,
            model_name=registration.model_name,
            owner=caller.principal.owner,
        )
    except TokenHeld as held:
        moved = await _move_stale_claim(
            database=database, upstream=upstream, caller=caller, registration=registration, holder=held.holder
        )
        if moved is None:
            await audit_event(audit, caller, "token.claim", "conflict", registration.token_id, detail)
            raise
        detail["from_model_name"] = held.holder.model_name
        await audit_event(audit, caller, "token.claim", "moved", registration.token_id, detail)
        return TokenClaim(token=moved, created=False, moved_from=held.holder.model_name)
    if claim.created:
        await audit_event(audit, caller, "token.claim", "ok", registration.token_id, detail)
    return claim


async def _move_stale_claim(
    *, database: Database, upstream: Upstream, caller: Caller, registration: Registration, holder: Token
) -> Token | None:
    """The caller's own claim, moved to the model being registered when the model holding it has let it go.

    A claim outlives its model in MLflow: the model may have been deleted, or renamed where the gateway could not
    follow (straight on MLflow). With no version of that model left carrying the token, the claim holds nothing,
    and its owner may take the token to another model without an admin. Other users' claims never move here.
    """
    if holder.owner != caller.principal.owner:
        return None
    # The caller holds the token's lock (see `register_tokenized_model`), so no version is being made meanwhile.
    if await _model_carries(
        upstream=upstream, principal=caller.principal, model_name=holder.model_name, token_id=registration.token_id
    ):
        return None
    return await run_in_threadpool(
        move_claim,
        database,
        token_id=registration.token_id,
        owner=caller.principal.owner,
        from_model=holder.model_name,
        to_model=registration.model_name,
    )


async def _roll_back_claim(
    *, database: Database, audit: AuditLog, caller: Caller, registration: Registration, claim: TokenClaim
) -> None:
    """Undo what this failed registration did to the claim: a new claim is released, a moved one moved back."""
    detail = {"model_name": registration.model_name}
    if claim.moved_from is None:
        await run_in_threadpool(
            release_token,
            database,
            token_id=registration.token_id,
            owner=caller.principal.owner,
            model_name=registration.model_name,
        )
    else:
        await run_in_threadpool(
            move_claim,
            database,
            token_id=registration.token_id,
            owner=caller.principal.owner,
            from_model=registration.model_name,
            to_model=claim.moved_from,
        )
        detail["to_model_name"] = claim.moved_from
    await audit_event(audit, caller, "token.claim", "rolled_back", registration.token_id, detail)


async def _existing_or_new_version(
    *,
    database: Database,
    upstream: Upstream,
    principal: Principal,
    registration: Registration,
    source: Source,
    warnings: list[str],
) -> TokenizedModelInfo:
    existing = await find_existing_version(
        upstream=upstream,
        principal=principal,
        model_name=registration.model_name,
        token_id=registration.token_id,
        source=source.uri,
    )
    if existing is not None:
        conflict = repeat_conflict(
            version_label=f"Model '{registration.model_name}' version {existing.get('version')}",
            registered=version_tags(existing),
            metric_name=registration.metric_name,
            baseline_value=registration.baseline_value,
        )
        if conflict is not None:
            raise ApiError(409, conflict, error_code=REGISTRATION_CONFLICT)
        await _require_change_rights(upstream=upstream, principal=principal, version=existing)
        left_out = repeat_leaves_out(
            version_label=f"Model '{registration.model_name}' version {existing.get('version')}",
            registered_tags=version_tags(existing),
            registered_description=existing.get("description"),
            tags=registration.tags,
            description=registration.description,
        )
        warnings = [*warnings, left_out] if left_out else warnings
    version = existing
    if version is None:
        version = await create_model_version(
            database=database,
            upstream=upstream,
            principal=principal,
            model_name=registration.model_name,
            source=source,
            tags=registration.tags,
            description=registration.description,
        )
    info = tokenized_info(version, warnings=warnings, created=existing is None)
    if info is None:
        raise ApiError(502, "MLflow returned the model version without its Hokusai tags.", layer=LAYER_MLFLOW)
    return info


async def _require_change_rights(*, upstream: Upstream, principal: Principal, version: Mapping[str, Any]) -> None:
    """MLflow's answer to the caller changing `version`, before a repeat returns it as theirs.

    A version found by a repeat normally carries the caller's own earlier registration, but it may have been
    registered under an earlier claim of the token, since released, and then taking it would bind the token to a
    model the caller may not be allowed to change at all. A user did so directly, through a claim moved off a model of
    their own they had deleted, and through a claim a timed-out attempt had left in place (security reviews,
    2026-11-28). Which claim a version was registered under is not recorded, so every repeat asks: re-writing the
    version's token tag with the value it has changes no data (MLflow does send a `model_version_tag.set` webhook
    event), and MLflow answers it as it answers any change to the model. A refusal is the caller's 403, and a claim
    this request made or moved is put back as it was.
    """
    await call_as(
        upstream,
        principal,
        "POST",
        MODEL_VERSIONS_SET_TAG,
        body={
            "name": version.get("name"),
            "version": version.get("version"),
            "key": TAG_TOKEN_ID,
            "value": version_tags(version).get(TAG_TOKEN_ID, ""),
        },
        action=f"take over version {version.get('version')} of model '{version.get('name')}'",
    )


async def register_baseline(
    *,
    database: Database,
    upstream: Upstream,
    audit: AuditLog,
    caller: Caller,
    model_type: str,
    run_id: str,
    artifact_path: str,
    metadata: Mapping[str, Any] | None,
) -> BaselineInfo:
    """Register a run's model as a baseline version of `hokusai-baseline-<model_type>`.

    The run is read as the caller, so MLflow decides whether they may use it. The version is added as the platform:
    a model type's baselines are one registered model shared by every user, and if its first registrant owned it,
    everyone else's baselines would be refused. No user can change or delete another's baseline; admins can.
    """
    principal = caller.principal
    model_type = normalize_model_type(model_type)
    run_id = validate_run_id(run_id)
    model_uri = validate_model_uri(f"runs:/{run_id}/{artifact_path.strip('/')}")
    metadata_json = validate_metadata(metadata)
    model_name = baseline_model_name(model_type)
    await ensure_account(upstream=upstream, principal=principal)
    run = await fetch_run(upstream=upstream, principal=principal, run_id=run_id)
    source = await resolve_source(upstream=upstream, principal=principal, model_uri=model_uri, run=run)
    tags = {
        TAG_IS_BASELINE: "true",
        TAG_MODEL_TYPE: model_type,
        TAG_RUN_ID: run_id,
        TAG_REGISTERED_BY: principal.owner,
        **metrics_tags(run.metrics),
    }
    if metadata_json is not None:
        tags[TAG_METADATA] = metadata_json
    async with shared_lock(database, _BASELINE_LOCK + model_type):
        version = await _existing_baseline(upstream=upstream, model_name=model_name, run_id=run_id, source=source.uri)
        created = version is None
        if version is None:
            version = await create_model_version(
                database=database,
                upstream=upstream,
                principal=PLATFORM,
                model_name=model_name,
                source=source,
                tags=tags,
                description=None,
            )
    info = baseline_info(version, created=created)
    if created:
        detail = {"source": source.uri}
        await audit_event(audit, caller, "model.register_baseline", "ok", f"{model_name}/{info.version}", detail)
        return info
    left_out = baseline_repeat_leaves_out(
        version_label=f"Model '{model_name}' version {info.version}",
        registered_metadata=info.tags.get(TAG_METADATA),
        metadata_json=metadata_json,
    )
    return info.model_copy(update={"warnings": [left_out] if left_out else []})


def baseline_info(version: Mapping[str, Any], *, created: bool = False) -> BaselineInfo:
    """A baseline version as the API shows it, from its tags (the platform wrote them: users cannot change them)."""
    tags = version_tags(version)
    name, number = str(version.get("name", "")), str(version.get("version", ""))
    return BaselineInfo(
        model_name=name,
        version=number,
        model_type=tags.get(TAG_MODEL_TYPE, baseline_model_type(name)),
        run_id=tags.get(TAG_RUN_ID, ""),
        model_uri=f"models:/{name}/{number}",
        tags=tags,
        created=created,
    )


async def list_baselines(
    *, upstream: Upstream, principal: Principal, model_type: str | None, page_token: str | None, max_results: int
) -> BaselineList:
    """The baseline versions the caller may read, of one model type or of all, in (type, version) order, in pages.

    Read as the caller, like any model: under the default permission READ everyone sees every baseline; where it is
    NO_PERMISSIONS only admins do, unless READ on the `hokusai-baseline-*` models is granted.
    """
    names = f"name = {filter_equals(baseline_model_name(model_type))}" if model_type else BASELINE_MODELS_FILTER
    await ensure_account(upstream=upstream, principal=principal)
    versions, next_page_token = await _search_versions(
        upstream=upstream,
        principal=principal,
        filter_string=f"{names} AND tags.{TAG_IS_BASELINE} = 'true'",
        max_results=max_results,
        page_token=page_token,
    )
    return BaselineList(baselines=[baseline_info(version) for version in versions], next_page_token=next_page_token)


async def _existing_baseline(*, upstream: Upstream, model_name: str, run_id: str, source: str) -> dict[str, Any] | None:
    """The baseline version already registered from this run's model, if any: the same baseline twice is one.

    Found by its source alone, whoever registered it: a model type's baselines are shared, and the same model twice
    among them would only weigh it double.
    """
    filter_string = f"name IN {filter_in([model_name])} AND tags.{TAG_RUN_ID} = {filter_equals(run_id)}"
    versions, _ = await _search_versions(
        upstream=upstream, principal=PLATFORM, filter_string=filter_string, max_results=_SEARCH_PAGE_SIZE
    )
    return next((version for version in versions if version.get("source") == source), None)


# --- lookups ---------------------------------------------------------------------------------------------------------


async def list_tokenized_models(
    *,
    database: Database,
    upstream: Upstream,
    principal: Principal,
    token_id: str | None,
    owner: str | None,
    page_token: str | None,
    max_results: int,
) -> TokenizedModelList:
    """Tokenized versions the caller may read, in (name, version) order, paged by MLflow's own page token.

    A version counts only while its model holds the token its tag names, as the token registry records it: a tag
    alone (written before the gateway guarded Hokusai's tags, or by an admin) claims nothing, and after a release or
    a transfer to another model the old versions are no longer the token's. A page may therefore hold fewer versions
    than asked for; its page token still leads on.
    """
    clauses = [f"tags.{TAG_TOKEN_ID} = {filter_equals(token_id)}" if token_id else f"tags.{TAG_TOKEN_ID} LIKE '%'"]
    held: dict[str, str] | None = None
    if token_id is not None or owner is not None:
        held = await run_in_threadpool(
            models_holding_tokens, database, token_ids=[token_id] if token_id else None, owner=owner
        )
        if not held:
            return TokenizedModelList(models=[], next_page_token=None)
        clauses.append(f"name IN {filter_in(sorted(set(held.values())))}")
    filter_string = " AND ".join(clauses)
    if len(filter_string) > _MAX_FILTER_LENGTH:
        raise ApiError(
            400,
            "This owner holds too many models to list in one query; filter by token_id instead.",
            error_code="INVALID_PARAMETER_VALUE",
        )
    await ensure_account(upstream=upstream, principal=principal)
    versions, next_page_token = await _search_versions(
        upstream=upstream,
        principal=principal,
        filter_string=filter_string,
        max_results=max_results,
        page_token=page_token,
    )
    found = [info for info in map(tokenized_info, versions) if info is not None]
    if held is None:
        held = await run_in_threadpool(models_holding_tokens, database, token_ids={info.token_id for info in found})
    models = [info for info in found if held.get(info.token_id) == info.model_name]
    return TokenizedModelList(models=models, next_page_token=next_page_token)


async def get_tokenized_model(
    *, database: Database, upstream: Upstream, principal: Principal, model_name: str, version: str
) -> TokenizedModelInfo:
    """One tokenized version; `version` may be a number or `latest` (the newest tokenized version).

    As in the listing, a version is tokenized only while its model holds the token its tag names: a released token,
    or one moved to another model, leaves the tag on the version as a record and binds nothing (security review,
    2026-11-28: the single lookup trusted the tag alone and showed the old version under the token's new holder).
    """
    model_name = validate_model_name(model_name)
    await ensure_account(upstream=upstream, principal=principal)
    number = validate_version(version)
    held = await run_in_threadpool(tokens_claiming_model, database, model_name=model_name)
    if number is None:
        found = await _latest_tokenized(upstream=upstream, principal=principal, model_name=model_name, held=held)
    else:
        payload = await call_as(
            upstream,
            principal,
            "GET",
            MODEL_VERSIONS_GET,
            params={"name": model_name, "version": version},
            action=f"read version {version} of model '{model_name}'",
        )
        found = payload.get("model_version")
    info = tokenized_info(found) if found else None
    if info is None:
        raise ApiError(404, no_tokenized_version(model_name, version), error_code="RESOURCE_DOES_NOT_EXIST")
    if info.token_id not in held:
        raise ApiError(
            404, token_not_held(model_name, info.version, info.token_id), error_code="RESOURCE_DOES_NOT_EXIST"
        )
    return info


def no_tokenized_version(model_name: str, version: str | None) -> str:
    """The 404 for a version that carries no token; a baseline model's says where its baselines are listed."""
    message = f"Model '{model_name}' has no tokenized version '{version}'."
    if not is_baseline_model_name(model_name):
        return message
    model_type = baseline_model_type(model_name).lower()
    return (
        f"{message} It holds baselines, which carry no token: list them with GET /api/v1/models/baseline"
        f"?model_type={model_type} (`hokusai models baselines --type {model_type}`)."
    )


async def _latest_tokenized(
    *, upstream: Upstream, principal: Principal, model_name: str, held: Collection[str]
) -> dict[str, Any] | None:
    """The newest version of `model_name` carrying a token the model holds."""
    newest: list[dict[str, Any]] = []
    for token_id in held:  # a model holds few tokens; usually one
        found = await _latest_version(
            upstream=upstream, principal=principal, filter_string=_versions_carrying(model_name, token_id)
        )
        if found is not None:
            newest.append(found)
    return max(newest, key=lambda found: int(found.get("version", 0)), default=None)


async def _latest_version(*, upstream: Upstream, principal: Principal, filter_string: str) -> dict[str, Any] | None:
    """The highest-numbered version that `filter_string` finds, if any."""
    versions, _ = await _search_versions(
        upstream=upstream,
        principal=principal,
        filter_string=filter_string,
        max_results=1,
        order_by=["version_number DESC"],
    )
    return versions[0] if versions else None


# --- tokens: admin operations ---------------------------------------------------------------------------------------


async def transfer(
    *,
    database: Database,
    keys: KeyStore,
    upstream: Upstream,
    audit: AuditLog,
    caller: Caller,
    token_id: str,
    new_owner: str,
    model_name: str | None,
) -> Token:
    """Give a token (and MANAGE on its registered model in MLflow) to another owner.

    The new owner must be an account (one a key was ever created for) and a new model must exist in MLflow: a typo
    would otherwise hand the token, and the real owner's rights on the model, to nobody.
    """
    if not await run_in_threadpool(keys.list, owner=new_owner):
        twin = await run_in_threadpool(keys.case_twin, new_owner)
        remedy = (
            f"did you mean '{twin}'? Account names are case-sensitive."
            if twin
            else f"an account exists once a key is created for it (hokusai keys create --owner {new_owner})."
        )
        raise ApiError(404, f"No account '{new_owner}': {remedy}", error_code="RESOURCE_DOES_NOT_EXIST")
    if model_name is not None:
        await call_as(
            upstream,
            caller.principal,
            "GET",
            REGISTERED_MODELS_GET,
            params={"name": model_name},
            action=f"find registered model '{model_name}' to move the token to",
        )
    # Under the token's lock, as registrations are: two transfers at once would each withdraw the same previous
    # owner's grant and leave the other new owner's in place.
    async with shared_lock(database, _TOKEN_LOCK + token_id):
        return await _transfer_locked(
            database=database,
            upstream=upstream,
            audit=audit,
            caller=caller,
            token_id=token_id,
            new_owner=new_owner,
            model_name=model_name,
        )


async def _transfer_locked(
    *,
    database: Database,
    upstream: Upstream,
    audit: AuditLog,
    caller: Caller,
    token_id: str,
    new_owner: str,
    model_name: str | None,
) -> Token:
    current = await run_in_threadpool(get_token, database, token_id=token_id)
    if current is None:
        raise token_not_found(token_id)
    if model_name is None:
        await _require_carrier(upstream=upstream, principal=caller.principal, token=current)
    # MLflow's grants move first and the record after: a failure in between leaves the record (and so the previous
    # owner) as it was, and the retry the error asks for hands the model over again, idempotently. The other order
    # would have the retry read the new owner as the previous one and leave the old owner's MANAGE in place.
    try:
        await upstream.hand_over_registered_model(
            model_name or current.model_name, new_owner=new_owner, previous_owner=current.owner
        )
    except httpx.TransportError as exc:
        raise mlflow_call_failed(exc) from exc
    except UpstreamError as exc:
        logger.warning("token %s stays with %s: MLflow grants failed: %s", token_id, current.owner, exc)
        raise ApiError(
            502,
            f"MLflow refused to hand model '{model_name or current.model_name}' to '{new_owner}', so token "
            f"'{token_id}' still belongs to '{current.owner}'; retry.",
            layer=LAYER_MLFLOW,
        ) from exc
    moved = await run_in_threadpool(
        transfer_token, database, token_id=token_id, new_owner=new_owner, model_name=model_name
    )
    if moved is None:
        raise token_not_found(token_id)
    token, previous_owner = moved
    detail = {"from": previous_owner, "to": new_owner, "model_name": token.model_name}
    await audit_event(audit, caller, "token.transfer", "ok", token_id, detail)
    return token


async def _require_carrier(*, upstream: Upstream, principal: Principal, token: Token) -> None:
    """409 unless a version of the claim's model still carries the token, before that model is handed over.

    A claim outlives its model (see `_move_stale_claim`), and another user may since have created a model of that
    name: handing it over gave the new owner MANAGE on a stranger's model (security review, 2026-11-28).
    """
    if not await _model_carries(
        upstream=upstream, principal=principal, model_name=token.model_name, token_id=token.token_id
    ):
        raise ApiError(
            409,
            f"No version of model '{token.model_name}' carries token '{token.token_id}' any more (the model was "
            "deleted, or renamed straight on MLflow), so that model is not handed over with it. Name the model the "
            "token should move to (--model, or `model_name` in the body).",
            error_code=TOKEN_MODEL_GONE,
        )


async def release(*, database: Database, audit: AuditLog, caller: Caller, token_id: str) -> Token:
    """Free a token for anyone to claim; its model versions keep their tags."""
    token = await run_in_threadpool(release_token, database, token_id=token_id)
    if token is None:
        raise token_not_found(token_id)
    detail = {"owner": token.owner, "model_name": token.model_name}
    await audit_event(audit, caller, "token.release", "ok", token_id, detail)
    return token


def token_not_found(token_id: str) -> ApiError:
    return ApiError(404, f"Token '{token_id}' is not claimed.", error_code="RESOURCE_DOES_NOT_EXIST")
