"""404 (or 405) instead of MLflow's 403 for what does not exist; part of `hokusai.mlflow_auth`.

MLflow's auth app refuses (403 "Permission denied") a request that names an experiment, run, registered model,
logged model or trace that does not exist: with no grant on a missing resource only the default permission
applies, and missing runs, logged models and traces are denied on purpose so that answers are no oracle for which
ids exist. It also fails closed (403) on a path or method no route serves. A plain MLflow answers all of these
with 404 (or 405), and so should we: "permission denied" for a mistyped run id sends users after the wrong fault.

The answer changes only when MLflow has already decided to refuse, and only from a refusal to a not-found: nothing
is ever allowed that MLflow denies. Existence is revealed only when every user may read everything anyway
(`default_permission` READ or higher, Hokusai's setting); with NO_PERMISSIONS MLflow's answer stands.
MLflow builds every such refusal with `make_forbidden_response()`, looked up by name at call time, so wrapping
that module attribute covers every call site without a per-request cost.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from typing import Any

from flask import Response, request
from werkzeug.exceptions import HTTPException

_LOGGED_MODEL_ID = re.compile(r"/mlflow/logged-models/(m-[0-9a-f]+)")

logger = logging.getLogger(__name__)


def _request_params() -> dict[str, Any]:
    params: dict[str, Any] = dict(request.args.items())
    if request.method in ("POST", "PATCH", "DELETE", "PUT") and request.is_json:
        body = request.get_json(silent=True)
        if isinstance(body, dict):
            params.update(body)
    params.update(request.view_args or {})
    return params


def _resource_lookups(params: dict[str, Any]) -> list[Callable[[], object]]:
    """Fetches of every resource the request names, in the order MLflow's handlers look them up."""
    from mlflow.server.handlers import _get_model_registry_store, _get_tracking_store

    tracking = _get_tracking_store()
    lookups: list[Callable[[], object]] = []
    if isinstance(params.get("experiment_id"), str) and params["experiment_id"]:
        lookups.append(functools.partial(tracking.get_experiment, params["experiment_id"]))
    if ("/registered-models/" in request.path or "/model-versions/" in request.path) and params.get("name"):
        lookups.append(functools.partial(_get_model_registry_store().get_registered_model, str(params["name"])))
    run_id = params.get("run_id") or params.get("run_uuid")
    if isinstance(run_id, str) and run_id:
        lookups.append(functools.partial(tracking.get_run, run_id))
    model = _LOGGED_MODEL_ID.search(request.path)
    if model is not None:
        lookups.append(functools.partial(tracking.get_logged_model, model.group(1)))
    trace_id = params.get("trace_id") or params.get("request_id")
    if "/traces/" in request.path and isinstance(trace_id, str) and trace_id:
        lookups.append(functools.partial(tracking.get_trace_info, trace_id))
    return lookups


def _not_found_instead() -> Response | None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
    from mlflow.server import auth as mlflow_auth_app
    from mlflow.server.auth.permissions import get_permission

    routing = request.routing_exception
    if isinstance(routing, HTTPException):
        return routing.get_response()  # no such route or method: MLflow's own 404 / 405 page, as without auth
    if not get_permission(mlflow_auth_app.auth_config.default_permission).can_read:
        return None
    for lookup in _resource_lookups(_request_params()):
        try:
            lookup()
        except MlflowException as exc:
            if exc.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
                return None
            return Response(exc.serialize_as_json(), status=exc.get_http_status_code(), mimetype="application/json")
    return None


def install_not_found_answers(mlflow_auth_app: Any) -> None:
    original = mlflow_auth_app.make_forbidden_response
    if getattr(original, "_hokusai_wrapped", False):
        return

    def make_forbidden_response() -> Response:
        try:
            replacement = _not_found_instead()
        except Exception:  # never let the courtesy check break a refusal
            logger.exception("checking whether a refused request names a missing resource failed")
            replacement = None
        return replacement if replacement is not None else original()

    make_forbidden_response._hokusai_wrapped = True  # type: ignore[attr-defined]
    mlflow_auth_app.make_forbidden_response = make_forbidden_response
