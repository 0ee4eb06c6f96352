"""Clearer answers than MLflow's 403 where a refusal is not about permission; part of `hokusai.mlflow_auth`.

MLflow's auth app refuses (403 "Permission denied") a request that names an experiment, run, registered model,
logged model, trace or evaluation dataset that does not exist: with no grant on a missing resource only the default
permission applies, and missing runs, logged models, traces and datasets are denied on purpose so that answers are
no oracle for which ids exist. It also fails closed (403) on a path or method no route serves. A plain MLflow
answers all of these with 404 (or 405), and so should we: "permission denied" for a mistyped run id sends users
after the wrong fault. Likewise it refuses to create or search evaluation datasets (and to search issues) without an
experiment id, since it authorises them by their experiments; a plain MLflow serves those calls, so the caller is
told what to add (400). And where its permission check needs a parameter the handler requires (a new trace, the
trace searches' experiments or locations, a batch's trace ids) and finds none, the caller gets the handler's own 400
naming it.

The answer changes only when MLflow has already decided to refuse, and only from a refusal to another refusal:
nothing is ever allowed that MLflow denies. Existence is revealed only when every user may read everything anyway
(`default_permission` READ or higher, Hokusai's setting); with NO_PERMISSIONS MLflow's 404-worthy 403 stands.
MLflow builds every such refusal with `make_forbidden_response()`, looked up by name at call time, so wrapping
that module attribute covers every call site without a per-request cost.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from flask import Response, request
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse  # Flask's Response, and what werkzeug's errors render

# Calls MLflow's auth app authorises by an experiment named in the body, and which a plain MLflow serves without one.
_DATASETS_UNSCOPED = (
    "Evaluation datasets are authorised by their experiments: name at least one in `experiment_ids` (in a JSON body "
    "with Content-Type: application/json, or as query parameters)."
)
_EXPERIMENT_SCOPED_CALLS = {
    "/mlflow/datasets/create": ("experiment_ids", _DATASETS_UNSCOPED),
    "/mlflow/datasets/search": ("experiment_ids", _DATASETS_UNSCOPED),
    "/mlflow/issues/search": (
        "experiment_id",
        "Issues are authorised by their experiment: name it in `experiment_id` (in a JSON body with Content-Type: "
        "application/json).",
    ),
}
# Request messages whose permission check reads a parameter the handler requires, by the handler's name for it.
_REQUIRED_BY_CHECK = {
    "StartTraceV3": "trace",
    "SearchTraces": "experiment_ids",
    "SearchTracesV3": "locations",
    "QueryTraceMetrics": "experiment_ids",
    "BatchGetTraces": "trace_ids",
    "BatchGetTraceInfos": "trace_ids",
}

logger = logging.getLogger(__name__)


def _request_params() -> dict[str, Any]:
    params: dict[str, Any] = dict(request.args.items())
    if request.method in ("POST", "PATCH", "DELETE", "PUT") and request.is_json:
        body = request.get_json(silent=True)
        if isinstance(body, dict):
            params.update(body)
    params.update(request.view_args or {})
    return params


def _params_as_checked() -> dict[str, Any]:
    """The parameters MLflow's permission checks read (`_get_request_param`): the query of a GET, the JSON body of a
    POST or PATCH, the body (if JSON) or else the query of a DELETE; path parameters in every case.

    The resources looked up must be the ones MLflow refused: a POST naming `?experiment_id=` in its query was not
    refused for that experiment, and must not be answered as if it were.
    """
    if request.method in ("POST", "PATCH") or (request.method == "DELETE" and request.is_json):
        body = request.get_json(silent=True)
        params: dict[str, Any] = dict(body) if isinstance(body, dict) else {}
    else:
        params = dict(request.args.items())
    params.update(request.view_args or {})
    return params


def _resource_lookups(params: dict[str, Any]) -> list[Callable[[], object]]:
    """Fetches of every resource the request names, in the order MLflow's handlers look them up."""
    from mlflow.server.handlers import _get_model_registry_store, _get_tracking_store

    tracking = _get_tracking_store()
    lookups: list[Callable[[], object]] = [
        functools.partial(tracking.get_experiment, experiment_id) for experiment_id in _experiment_ids(params)
    ]
    if ("/registered-models/" in request.path or "/model-versions/" in request.path) and params.get("name"):
        lookups.append(functools.partial(_get_model_registry_store().get_registered_model, str(params["name"])))
    run_id = params.get("run_id") or params.get("run_uuid")
    if isinstance(run_id, str) and run_id:
        lookups.append(functools.partial(tracking.get_run, run_id))
    # Ids in the path, as MLflow's routes name them: every logged-model, issue and job route has its own.
    in_path = request.view_args or {}
    if "/mlflow/logged-models/" in request.path and isinstance(in_path.get("model_id"), str):
        lookups.append(functools.partial(tracking.get_logged_model, in_path["model_id"]))
    if "/mlflow/issues/" in request.path and isinstance(in_path.get("issue_id"), str):
        lookups.append(functools.partial(tracking.get_issue, in_path["issue_id"]))
    if "/mlflow/jobs/" in request.path and isinstance(in_path.get("job_id"), str):
        from mlflow.server.jobs import get_job

        lookups.append(functools.partial(get_job, in_path["job_id"]))
    trace_id = params.get("trace_id") or params.get("request_id")
    trace_call = "/traces/" in request.path or request.path.endswith("/get-trace-artifact")  # the web UI's fetch
    if trace_call and isinstance(trace_id, str) and trace_id:
        lookups.append(functools.partial(tracking.get_trace_info, trace_id))
    if isinstance(params.get("dataset_id"), str) and params["dataset_id"]:
        lookups.append(functools.partial(tracking.get_dataset, params["dataset_id"]))
    scorer = params.get("name")
    if "/mlflow/scorers/" in request.path and isinstance(scorer, str) and scorer:
        # MLflow authorises a scorer by its own grants, and denies one it cannot find (deleting an unknown one).
        lookups.extend(
            functools.partial(tracking.get_scorer, experiment_id, scorer) for experiment_id in _experiment_ids(params)
        )
    # Logged models a run's metrics, inputs or outputs, or a new model version, name in the body (MLflow's checks
    # read each; a deleted one is not found either).
    lookups.extend(functools.partial(tracking.get_logged_model, model_id) for model_id in _body_model_ids(params))
    return lookups


def _body_model_ids(params: dict[str, Any]) -> list[str]:
    named = [params, *(item for field in ("metrics", "models") for item in _listed(params.get(field)))]
    return [
        model_id
        for item in named
        for model_id in (item.get("model_id"), item.get("modelId"))
        if isinstance(model_id, str) and model_id
    ]


def _listed(value: object) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _experiment_ids(params: dict[str, Any]) -> list[str]:
    listed = params.get("experiment_ids")
    ids = [params.get("experiment_id")] + (listed if isinstance(listed, list) else [])
    return [experiment_id for experiment_id in ids if isinstance(experiment_id, str) and experiment_id]


def _bad_request(message: str) -> Response:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    exc = MlflowException(message, INVALID_PARAMETER_VALUE)
    return Response(exc.serialize_as_json(), status=exc.get_http_status_code(), mimetype="application/json")


def _unscoped_call(params: dict[str, Any]) -> Response | None:
    scoped = next((call for suffix, call in _EXPERIMENT_SCOPED_CALLS.items() if request.path.endswith(suffix)), None)
    if scoped is None:
        return None
    field, message = scoped
    named = params.get(field)
    if any(isinstance(value, str) and value for value in (named if isinstance(named, list) else [named])):
        return None
    return _bad_request(message)


@functools.cache
def _required_by_check() -> dict[tuple[str, str], str]:
    """(path, method) -> the parameter, for every route of the request messages in `_REQUIRED_BY_CHECK`."""
    from mlflow.server.handlers import get_endpoints

    def required_parameter(request_class: type) -> str | None:
        return _REQUIRED_BY_CHECK.get(request_class.__name__)

    return {
        (path, method): parameter
        for path, parameter, methods in get_endpoints(required_parameter)
        if isinstance(parameter, str)
        for method in methods
    }


def _missing_required_parameter(params: dict[str, Any]) -> Response | None:
    parameter = _required_by_check().get((request.path, request.method))
    if parameter is None or params.get(parameter) not in (None, ""):
        return None
    # The words of MLflow's handlers (`_validate_param_against_schema`), so the answer matches a plain MLflow's.
    return _bad_request(
        f"Missing value for required parameter '{parameter}'. See the API docs for more information about request "
        "parameters."
    )


def _clearer_refusal() -> BaseResponse | None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

    routing = request.routing_exception
    if isinstance(routing, HTTPException):
        return routing.get_response()  # no such route or method: MLflow's own 404 / 405 page, as without auth
    params = _request_params()
    answer = _unscoped_call(params) or _missing_required_parameter(params)
    if answer is not None:
        return answer
    if not _everyone_reads():
        return None
    for lookup in _resource_lookups(_params_as_checked()):
        try:
            lookup()
        except MlflowException as exc:
            if exc.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
                return None
            return Response(exc.serialize_as_json(), status=exc.get_http_status_code(), mimetype="application/json")
    return None


def _graphql_check_passing_unknown_runs(check: Callable[..., bool]) -> Callable[..., bool]:
    """MLflow's GraphQL check, letting a request for a run that does not exist reach its resolver.

    The check cannot authorise a run it cannot find and answers null, with no error: the web UI's run page for a
    mistyped run id showed an empty page where a plain MLflow says "Run … not found". Where every user may read
    everything anyway, the resolver gives that answer; with NO_PERMISSIONS the null stands, and a run that exists
    is refused as MLflow refuses it (an owner may still deny one user their experiment).
    """

    def check_authorization(self: object, field_name: str, args: dict[str, Any], username: str) -> bool:
        return check(self, field_name, args, username) or (
            field_name in _GRAPHQL_RUN_FIELDS and _everyone_reads() and _run_is_unknown(args.get("input"))
        )

    return check_authorization


_GRAPHQL_RUN_FIELDS = ("mlflowGetRun", "mlflowListArtifacts")


def _run_is_unknown(graphql_input: object) -> bool:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
    from mlflow.server.handlers import _get_tracking_store

    run_id = getattr(graphql_input, "run_id", None) or getattr(graphql_input, "run_uuid", None)
    if not isinstance(run_id, str) or not run_id:
        return False
    try:
        _get_tracking_store().get_run(run_id)
    except MlflowException as exc:
        return exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST)
    return False


def _everyone_reads() -> bool:
    from mlflow.server import auth as mlflow_auth_app
    from mlflow.server.auth.permissions import get_permission

    return get_permission(mlflow_auth_app.auth_config.default_permission).can_read


def install_clearer_refusals(mlflow_auth_app: Any) -> None:
    original = mlflow_auth_app.make_forbidden_response
    if getattr(original, "_hokusai_wrapped", False):
        return
    middleware = mlflow_auth_app.GraphQLAuthorizationMiddleware
    middleware._check_authorization = _graphql_check_passing_unknown_runs(middleware._check_authorization)

    def make_forbidden_response() -> BaseResponse:
        try:
            replacement = _clearer_refusal()
        except Exception:  # never let the courtesy check break a refusal
            logger.exception("looking for a clearer answer to a refused request failed")
            replacement = None
        return replacement if replacement is not None else original()

    make_forbidden_response._hokusai_wrapped = True  # type: ignore[attr-defined]
    mlflow_auth_app.make_forbidden_response = make_forbidden_response
