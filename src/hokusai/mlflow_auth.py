"""MLflow-side authentication: the `authorization_function` of the embedded MLflow's auth app.

MLflow calls `authenticate_request()` with no arguments inside a Flask request context, several times per
request. It accepts the gateway's short-lived assertion (`Authorization: Bearer <jwt>`) and hands HTTP Basic
(operators logging in to MLflow directly) to MLflow's own check. Everything else is refused with a 401 in the
JSON shape the MLflow client understands. The shared secret is read once from the file (mode 0600) named by
`HOKUSAI_ASSERTION_SECRET_FILE`, set by the Hokusai server when it starts MLflow.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
from flask import Response, g, request
from werkzeug.datastructures import Authorization
from werkzeug.exceptions import HTTPException

from hokusai.server.assertion import verify_assertion

SECRET_FILE_ENV = "HOKUSAI_ASSERTION_SECRET_FILE"
_MEMO_ATTRIBUTE = "_hokusai_authorization"
_LOGGED_MODEL_ID = re.compile(r"/mlflow/logged-models/(m-[0-9a-f]+)")

logger = logging.getLogger(__name__)


@functools.cache
def _secret() -> str:
    path = os.environ.get(SECRET_FILE_ENV)
    if not path:
        # Fail closed: without the secret no assertion can be checked, so none is accepted.
        raise RuntimeError(f"{SECRET_FILE_ENV} is not set; the Hokusai assertion secret is unknown")
    return Path(path).read_text(encoding="utf-8").strip()


def _unauthenticated(message: str) -> Response:
    body = json.dumps({"error_code": "UNAUTHENTICATED", "message": message, "layer": "mlflow"})
    return Response(body, status=401, mimetype="application/json", headers={"WWW-Authenticate": 'Basic realm="mlflow"'})


def _authenticate() -> Authorization | Response:
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "basic":
        # Operators keep MLflow's own username/password login.
        from mlflow.server.auth import authenticate_request_basic_auth

        return authenticate_request_basic_auth()
    if scheme.lower() != "bearer" or not credentials:
        return _unauthenticated("This MLflow server only accepts requests through the Hokusai API (or Basic login).")
    try:
        identity = verify_assertion(credentials.strip(), _secret())
    except jwt.InvalidTokenError:
        # Expired, forged, wrong audience or garbage: the reason stays in the server, not in the response.
        return _unauthenticated("The Hokusai identity assertion is invalid or expired.")
    return Authorization("basic", {"username": identity.username})


def authenticate_request() -> Authorization | Response:
    """MLflow's hook; memoised per request because MLflow calls it two to five times."""
    memo = g.get(_MEMO_ATTRIBUTE)
    if memo is None:
        memo = _authenticate()
        setattr(g, _MEMO_ATTRIBUTE, memo)
    return memo


# --- 404 instead of 403 for what does not exist -------------------------------------------------------------------
#
# MLflow's auth app refuses (403 "Permission denied") a request that names an experiment, run, registered model,
# logged model or trace that does not exist: with no grant on a missing resource only the default permission
# applies, and missing runs, logged models and traces are denied on purpose so that answers are no oracle for which
# ids exist. It also fails closed (403) on a path or method no route serves. A plain MLflow answers all of these
# with 404 (or 405), and so should we: "permission denied" for a mistyped run id sends users after the wrong fault.
#
# The answer changes only when MLflow has already decided to refuse, and only from a refusal to a not-found: nothing
# is ever allowed that MLflow denies. Existence is revealed only when every user may read everything anyway
# (`default_permission` READ or higher, Hokusai's setting); with NO_PERMISSIONS MLflow's answer stands.
# MLflow builds every such refusal with `make_forbidden_response()`, looked up by name at call time, so wrapping
# that module attribute covers every call site without a per-request cost.


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


def _install_not_found_answers() -> None:
    # MLflow's auth app imports this module on its first request; anywhere else there is nothing to wrap, and
    # importing the auth app would start its stores.
    mlflow_auth_app = sys.modules.get("mlflow.server.auth")
    if mlflow_auth_app is None:
        return
    original = getattr(mlflow_auth_app, "make_forbidden_response", None)
    if original is None or getattr(original, "_hokusai_wrapped", False):
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


_install_not_found_answers()
