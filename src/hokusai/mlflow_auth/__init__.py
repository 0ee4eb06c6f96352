"""MLflow-side authentication: the `authorization_function` of the embedded MLflow's auth app.

MLflow calls `authenticate_request()` with no arguments inside a Flask request context, several times per
request. It accepts the gateway's short-lived assertion (`Authorization: Bearer <jwt>`) and hands HTTP Basic
(operators logging in to MLflow directly) to MLflow's own check. Everything else is refused with a 401 in the
JSON shape the MLflow client understands. The shared secret is read once from the file (mode 0600) named by
`HOKUSAI_ASSERTION_SECRET_FILE`, set by the Hokusai server when it starts MLflow.

Importing the package also adjusts six things in MLflow's auth app, one module each: refusals of missing resources
become MLflow's own 404 and unscoped dataset calls a 400 saying what is missing (`refusals`); a parameter of the
wrong JSON type, or named twice with two values, gets MLflow's own 400 (`params`); a trace written again needs
update permission where it already is (`trace_writes`); the auth store's per-request reads are cached
(`store_cache`), and so is the experiment each run belongs to (`run_cache`); and the caller is an MLflow admin only
when their key is an admin key (`admin_claim`). All replace MLflow internals by name: recheck them when the MLflow
pin changes.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import jwt
from flask import Response, g, request
from werkzeug.datastructures import Authorization

from hokusai.errors import LAYER_MLFLOW, ErrorCode, error_envelope
from hokusai.mlflow_auth.admin_claim import asserted_identity, install_admin_claim
from hokusai.mlflow_auth.params import install_param_checks
from hokusai.mlflow_auth.refusals import install_clearer_refusals
from hokusai.mlflow_auth.run_cache import install_run_cache
from hokusai.mlflow_auth.store_cache import install_store_cache
from hokusai.mlflow_auth.trace_writes import install_trace_write_checks
from hokusai.server.assertion import verify_assertion
from hokusai.server.child_env import ASSERTION_SECRET_FILE_ENV, STORE_CACHE_ENV
from hokusai.validation import KEY_PREFIX

_MEMO_ATTRIBUTE = "_hokusai_authorization"
_THROUGH_THE_API = (
    "This is the MLflow server behind a Hokusai API, which accepts requests only through that API (or a Basic login)."
)
_API_SETTINGS = "MLFLOW_TRACKING_URI=<api url>/api/mlflow and HOKUSAI_API_URL=<api url>, not this server's port"


@functools.cache
def _secret() -> str:
    path = os.environ.get(ASSERTION_SECRET_FILE_ENV)
    if not path:
        # Fail closed: without the secret no assertion can be checked, so none is accepted.
        raise RuntimeError(f"{ASSERTION_SECRET_FILE_ENV} is not set; the Hokusai assertion secret is unknown")
    return Path(path).read_text(encoding="utf-8").strip()


def _unauthenticated(message: str) -> Response:
    body = json.dumps(error_envelope(ErrorCode.UNAUTHENTICATED, message, LAYER_MLFLOW))
    return Response(body, status=401, mimetype="application/json", headers={"WWW-Authenticate": 'Basic realm="mlflow"'})


def _authenticate() -> Authorization | Response:
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    asserted_identity.set(None)
    if scheme.lower() == "basic":
        # Operators keep MLflow's own username/password login.
        from mlflow.server.auth import authenticate_request_basic_auth

        return authenticate_request_basic_auth()
    if scheme.lower() != "bearer" or not credentials:
        return _unauthenticated(_THROUGH_THE_API)
    if credentials.strip().startswith(KEY_PREFIX):
        # A Hokusai key sent here: the client was pointed at this MLflow's own port instead of the API.
        return _unauthenticated(f"{_THROUGH_THE_API} Send your Hokusai key to the API: {_API_SETTINGS}.")
    try:
        identity = verify_assertion(credentials.strip(), _secret())
    except jwt.InvalidTokenError:
        # Expired, forged, wrong audience or garbage: the reason stays in the server, not in the response.
        return _unauthenticated("The Hokusai identity assertion is invalid or expired.")
    asserted_identity.set(identity)
    return Authorization("basic", {"username": identity.username})


def authenticate_request() -> Authorization | Response:
    """MLflow's hook; memoised per request because MLflow calls it two to five times."""
    memo = g.get(_MEMO_ATTRIBUTE)
    if memo is None:
        memo = _authenticate()
        setattr(g, _MEMO_ATTRIBUTE, memo)
    return memo


def _install_into_mlflow() -> None:
    # MLflow's auth app imports this package on its first request; anywhere else (tests, tools) there is nothing to
    # adjust, and importing the auth app would start its stores.
    mlflow_auth_app = sys.modules.get("mlflow.server.auth")
    if mlflow_auth_app is None:
        return
    install_clearer_refusals(mlflow_auth_app)
    install_param_checks(mlflow_auth_app)
    install_trace_write_checks(mlflow_auth_app)
    # The caches are for the MLflow the Hokusai server embeds, which names the counter its workers share.
    generation_file = os.environ.get(STORE_CACHE_ENV)
    if generation_file:
        install_store_cache(mlflow_auth_app, Path(generation_file))
        install_run_cache(mlflow_auth_app)
    # Installed last, so it wraps the cached `get_user`: the claim is applied on every call, never cached.
    install_admin_claim(mlflow_auth_app)


_install_into_mlflow()
