"""Request parameters read by MLflow's auth app as its handlers read them; part of `hokusai.mlflow_auth`.

MLflow's auth app reads the parameters that name the resource to authorise (`_get_request_param`,
`_run_id_or_uuid_param`) before the handler reads them again, and the two read differently:
- A handler parses a JSON body into its protobuf message, which also takes a field's camelCase JSON name (`runId`
  for `run_id`) and acts on `run_id or run_uuid`. The auth app reads the raw `run_id` key and falls back to
  `run_uuid` when the key is absent: `{"run_uuid": <own run>, "runId": <another user's run>}` was authorised on the
  first run and written to the second.
- `upload-artifact` is authorised on the query's `run_id or run_uuid` and writes to `run_uuid`.
(Both found by a security review, 2026-11-27.) So a request naming a parameter under two spellings with different
values gets a 400, before anything is authorised; one spelling, or several with one value, is read as before.

Also, MLflow's handlers refuse `{"experiment_id": {"a": 1}}` or `{"name": ["x"]}` with 400 INVALID_PARAMETER_VALUE,
while the auth app passes whatever JSON it finds to its store, which fails (a 500) before the handler can refuse.
Every parameter the auth app reads is a single value, so an object or a list gets the handler's answer, worded as
the handler words it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

_RUN_ID_SPELLINGS = ("run_id", "runId", "run_uuid", "runUuid")
_RUN_ID_QUERY_SPELLINGS = ("run_id", "run_uuid")


def wrong_type(param: str, value: object) -> Exception | None:
    """The error MLflow's handlers raise for `value` in `param`, when it is an object or a list; else `None`."""
    if not isinstance(value, dict | list):
        return None
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(
        f"Invalid value {json.dumps(value, separators=(',', ':'))} for parameter '{param}' supplied:  Hint: Value "
        f"was of type '{type(value).__name__}'. See the API docs for more information about request parameters.",
        INVALID_PARAMETER_VALUE,
    )


def camel_case(field: str) -> str:
    """The JSON name protobuf gives a field: `filter_string1` -> `filterString1`."""
    head, *rest = field.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def spellings(param: str, *, json_body: bool) -> tuple[str, ...]:
    """Every name under which a handler may read `param`: a JSON body's camelCase too; a run's id as `run_uuid`."""
    if param in _RUN_ID_QUERY_SPELLINGS:
        return _RUN_ID_SPELLINGS if json_body else _RUN_ID_QUERY_SPELLINGS
    return (param, camel_case(param)) if json_body else (param,)


def conflict(param: str, named: dict[str, object]) -> Exception | None:
    """MLflow's 400 when the spellings in `named` (name -> value) give `param` two different values; else `None`.

    Empty values do not count: the handlers read `run_id or run_uuid`, and an empty id authorises nothing.
    """
    given = {name: value for name, value in named.items() if value not in ("", None)}
    values = list(given.values())
    if all(value == values[0] for value in values[1:]):
        return None
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    names = ", ".join(f"'{name}'" for name in given)
    return MlflowException(
        f"Conflicting values for parameter '{param}': {names} name different resources. Send one of them.",
        INVALID_PARAMETER_VALUE,
    )


def _request_args() -> tuple[dict[str, Any], bool]:
    """The parameters MLflow's `_get_request_param` reads, and whether they come from a JSON body (else the query)."""
    from flask import request

    json_body = request.method in ("POST", "PATCH") or (request.method == "DELETE" and request.is_json)
    source = request.get_json(silent=True) if json_body else request.args
    args = source if isinstance(source, dict) else {}  # a MultiDict is a dict; MLflow reads its first values too
    return {**args, **(request.view_args or {})}, json_body


def _checked_reader(
    original: Callable[[str], Any], request_args: Callable[[], tuple[dict[str, Any], bool]]
) -> Callable[[str], Any]:
    def get_request_param(param: str) -> Any:
        value = original(param)  # MLflow's own 400 for a missing parameter, as before
        args, json_body = request_args()
        named = {name: args[name] for name in spellings(param, json_body=json_body) if name in args}
        # A run's id is `run_id` in the message whichever spelling MLflow's fallback to `run_uuid` was reading.
        named_as = "run_id" if param in _RUN_ID_QUERY_SPELLINGS else param
        error = conflict(named_as, named) or wrong_type(param, value)
        if error is not None:
            raise error
        return value

    return get_request_param


def install_param_checks(
    mlflow_auth_app: Any, request_args: Callable[[], tuple[dict[str, Any], bool]] = _request_args
) -> None:
    """Wrap the auth app's parameter readers: wrong types and conflicting spellings are MLflow's 400; idempotent."""
    original = mlflow_auth_app._get_request_param
    if getattr(original, "_hokusai_checked", False):
        return
    get_request_param = _checked_reader(original, request_args)
    get_request_param._hokusai_checked = True  # type: ignore[attr-defined]
    # The auth app's validators look these functions up by name at call time, so replacing them covers every one.
    mlflow_auth_app._get_request_param = get_request_param
    mlflow_auth_app._run_id_or_uuid_param = _checked_run_query(mlflow_auth_app._run_id_or_uuid_param)


def _checked_run_query(original: Callable[[], str]) -> Callable[[], str]:
    """The artifact routes' run id, refused when `run_id` and `run_uuid` name different runs."""

    def run_id_or_uuid_param() -> str:
        from flask import request

        error = conflict("run_id", {name: request.args.get(name) for name in _RUN_ID_QUERY_SPELLINGS})
        if error is not None:
            raise error
        return original()

    return run_id_or_uuid_param
