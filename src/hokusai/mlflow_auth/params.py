"""Request parameters read by MLflow's auth app as its handlers read them; part of `hokusai.mlflow_auth`.

MLflow's auth app reads the parameters that name the resource to authorise (`_get_request_param`,
`_run_id_or_uuid_param`, and its own readers of the JSON body) before the handler reads them again, and the two read
differently:
- A handler parses a JSON body into its protobuf message, which also takes a field's camelCase JSON name (`runId`
  for `run_id`) and acts on `run_id or run_uuid`. The auth app reads the raw `run_id` key and falls back to
  `run_uuid` when the key is absent: `{"run_uuid": <own run>, "runId": <another user's run>}` was authorised on the
  first run and written to the second.
- `upload-artifact` is authorised on the query's `run_id or run_uuid` and writes to `run_uuid`.
- A DELETE's or PATCH's handler reads its JSON body whatever its Content-Type; the auth app reads it only when it is
  labelled JSON (a DELETE's query otherwise). A path parameter overrides the body for the auth app, while some
  handlers take the body's.
- A handler decodes a body that is a JSON string once more (legacy clients); the auth app's checks do not.
(Found by four security reviews, 2026-11-27 and 2026-11-28.) So a request naming a parameter in two places or
spellings with different values gets a 400 before anything is authorised, and a double-encoded body is decoded before
any check reads it; one spelling, or several with one value, is read as before.

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
_TOO_DEEP = "The request body nests JSON too deeply to be read; MLflow's calls take flat objects and lists."


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
    """MLflow's 400 when the spellings in `named` (label -> value) give `param` two different values; else `None`.

    Empty values do not count: the handlers read `run_id or run_uuid`, and an empty id authorises nothing.
    """
    given = {name: value for name, value in named.items() if value not in ("", None)}
    values = list(given.values())
    if all(value == values[0] for value in values[1:]):
        return None
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    names = ", ".join(given)
    return MlflowException(
        f"Conflicting values for parameter '{param}': {names} name different resources. Send one of them.",
        INVALID_PARAMETER_VALUE,
    )


_Sources = dict[str, tuple[dict[str, Any], bool]]


def _parameter_sources() -> _Sources:
    """Where this request's parameters are read, by a label for messages, each with whether it is a JSON body.

    MLflow's auth app reads a GET's query, a POST's or PATCH's body only when it is labelled JSON, and a DELETE's
    body only when it is labelled JSON (else its query), and lets the route's path parameters override all of them;
    the handlers read the JSON body of a PATCH or DELETE whatever its label (a POST must be labelled JSON), and some
    read an id from the body where the route has it in the path. `registered-models/delete?name=<own model>` with the
    body `{"name": <another user's model>}` sent as `text/plain` was authorised on the query and deleted the body's
    model; `PATCH logged-models/<own model>` with `{"model_id": <another user's model>}` was authorised on the path
    and finalized the body's, as JSON and, once that was refused, as `text/plain` (found by the second, third and
    fourth security reviews, 2026-11-27 and 2026-11-28). Each place is a source of its own, so that such a pair
    conflicts.
    """
    from flask import request

    places: dict[str, tuple[dict[str, Any], bool]] = {}
    if request.view_args:
        places["path"] = (dict(request.view_args), False)
    if request.method == "GET":
        places["query"] = ({**request.args}, False)  # a MultiDict's first values, as MLflow reads them
    elif request.method == "POST" or request.is_json:  # a POST not labelled JSON is the handler's 400
        body = request.get_json(silent=True)  # the auth app's read, cached: the handler reads this object too
        places["body"] = (body if isinstance(body, dict) else {}, True)
    else:
        if request.method == "DELETE":
            places["query"] = ({**request.args}, False)
        places["body"] = (_decoded_again(_parsed_body(force=True)), True)
    if len(places) == 1:
        return {"": next(iter(places.values()))}
    return {f" in the {where}": source for where, source in places.items()}


def _decoded_again(body: object) -> dict[str, Any]:
    """A parsed body as MLflow's handlers take it: a JSON string holding an object is that object (legacy clients)."""
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            return {}
        except RecursionError:  # a string holding thousands of nested brackets: the handler's second read fails too
            raise _too_deep() from None
    return body if isinstance(body, dict) else {}


def read_double_encoded_body_as_handlers_do() -> None:
    """Make a JSON body that is a JSON string holding an object read as that object by everyone, checks included.

    MLflow's handlers decode such a body a second time; its auth app's checks do not, and some then read the query
    for what they authorise instead: `datasets/create?experiment_ids=<own>` with the body
    `"{\"experiment_ids\": [<another user's>]}"` was authorised on the query and created in the body's experiment
    (second security review, 2026-11-27). Flask caches a parsed body for every later read; this caches the object.
    A body nested too deeply to parse is MLflow's 400 here, before any check or handler fails on it.
    """
    from flask import request

    if not request.is_json:  # what such clients send; a POST of another type gets the handler's 400 anyway
        return
    body = _parsed_body(force=False)
    if isinstance(body, str) and (decoded := _decoded_again(body)):
        request._cached_json = (decoded, decoded)


def _parsed_body(*, force: bool) -> object:
    """The request's JSON body (`force`: whatever its Content-Type, as a PATCH's or DELETE's handler reads it), None
    if it does not parse; MLflow's 400 if it nests too deeply to parse at all (Flask's parser fails, a 500 before).

    A forced read parses the body's bytes, kept for the handler, and leaves Flask's parsed JSON alone: the auth app's
    own unforced reads must still find no JSON in a body not labelled as such. (`get_json(force=True, cache=False)`
    consumed the stream, and the handler found an empty body: a 400 for every unlabelled PATCH or DELETE.)
    """
    from flask import request

    try:
        if not force:
            return request.get_json(silent=True)
        try:
            return json.loads(request.get_data(cache=True))
        except ValueError:
            return None
    except RecursionError:
        raise _too_deep() from None


def _too_deep() -> Exception:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(_TOO_DEEP, INVALID_PARAMETER_VALUE)


def _checked_reader(original: Callable[[str], Any], sources: Callable[[], _Sources]) -> Callable[[str], Any]:
    def get_request_param(param: str) -> Any:
        value = original(param)  # MLflow's own 400 for a missing parameter, as before
        named = {
            f"'{name}'{where}": args[name]
            for where, (args, json_body) in sources().items()
            for name in spellings(param, json_body=json_body)
            if name in args
        }
        # A run's id is `run_id` in the message whichever spelling MLflow's fallback to `run_uuid` was reading.
        named_as = "run_id" if param in _RUN_ID_QUERY_SPELLINGS else param
        error = conflict(named_as, named) or wrong_type(param, value)
        if error is not None:
            raise error
        return value

    return get_request_param


def install_param_checks(mlflow_auth_app: Any, sources: Callable[[], _Sources] = _parameter_sources) -> None:
    """Wrap the auth app's parameter readers: wrong types and conflicting spellings are MLflow's 400, and a
    double-encoded body is decoded before any check reads it; idempotent."""
    original = mlflow_auth_app._get_request_param
    if getattr(original, "_hokusai_checked", False):
        return
    get_request_param = _checked_reader(original, sources)
    get_request_param._hokusai_checked = True  # type: ignore[attr-defined]
    # The auth app looks these functions up by name at call time, so replacing them covers every check.
    mlflow_auth_app._get_request_param = get_request_param
    mlflow_auth_app._run_id_or_uuid_param = _checked_run_query(mlflow_auth_app._run_id_or_uuid_param)
    mlflow_auth_app._find_validator = _decoding_first(mlflow_auth_app._find_validator)


def _decoding_first(find_validator: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """MLflow's validator lookup, which its `_before_request` calls just before the check, after decoding the body."""

    def find_validator_for_decoded_body(req: Any) -> Any:
        read_double_encoded_body_as_handlers_do()
        return find_validator(req)

    return find_validator_for_decoded_body


def _checked_run_query(original: Callable[[], str]) -> Callable[[], str]:
    """The artifact routes' run id, refused when `run_id` and `run_uuid` name different runs."""

    def run_id_or_uuid_param() -> str:
        from flask import request

        error = conflict("run_id", {f"'{name}'": request.args.get(name) for name in _RUN_ID_QUERY_SPELLINGS})
        if error is not None:
            raise error
        return original()

    return run_id_or_uuid_param
