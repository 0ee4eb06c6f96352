"""Where a registration's model comes from: the run behind a model URI, read as the caller, and the source MLflow is
given for it (resolved as the MLflow client resolves it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from hokusai._mlflow_filters import filter_equals, filter_in
from hokusai.errors import LAYER_MLFLOW, ErrorCode
from hokusai.server.errors import ApiError
from hokusai.server.keys import Principal
from hokusai.server.mlflow_rest import call_as
from hokusai.server.registry.versions import MODEL_VERSIONS_GET, Source, latest_version
from hokusai.server.upstream import Upstream
from hokusai.validation import GENERATED_RUN_ID_RE, ModelsUri, parse_models_uri, run_id_from_uri

RUNS_GET = "/api/2.0/mlflow/runs/get"
ARTIFACTS_LIST = "/api/2.0/mlflow/artifacts/list"
LOGGED_MODELS_SEARCH = "/api/2.0/mlflow/logged-models/search"
LOGGED_MODELS_GET = "/api/2.0/mlflow/logged-models/{model_id}"
REGISTERED_MODELS_ALIAS = "/api/2.0/mlflow/registered-models/alias"

_MLMODEL = "MLmodel"


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
            f"Check the run id, or ask an admin for READ on its experiment.{_unlike_a_run_id(run_id)}",
            error_code=ErrorCode.PERMISSION_DENIED,
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
    if GENERATED_RUN_ID_RE.fullmatch(run_id):
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
    version: dict[str, Any] | None = None  # the registered model version a `models:/<name>/…` URI names


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
    return LocatedSource(uri=uri, run_id=version.get("run_id") or None, derived=True, version=version)


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
        return await latest_version(upstream=upstream, principal=principal, filter_string=latest)
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
            error_code=ErrorCode.RESOURCE_DOES_NOT_EXIST,
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
