"""MLflow's own 400 for a parameter of the wrong JSON type, where its auth app would fail with a 500; part of
`hokusai.mlflow_auth`.

MLflow's handlers refuse `{"experiment_id": {"a": 1}}` or `{"name": ["x"]}` with 400 INVALID_PARAMETER_VALUE. Its auth
app reads the same parameters first (`_get_request_param`) to find the resource to authorise, and passes whatever
JSON it finds to its store, which fails (a 500) before the handler can refuse. Every parameter the auth app reads
is a single value, so an object or a list gets the handler's answer, worded as the handler words it.
"""

from __future__ import annotations

import json
from typing import Any


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


def install_param_type_check(mlflow_auth_app: Any) -> None:
    """Wrap the auth app's parameter reader so that an object or a list is MLflow's 400; idempotent."""
    original = mlflow_auth_app._get_request_param
    if getattr(original, "_hokusai_checked", False):
        return

    def get_request_param(param: str) -> Any:
        value = original(param)
        error = wrong_type(param, value)
        if error is not None:
            raise error
        return value

    get_request_param._hokusai_checked = True  # type: ignore[attr-defined]
    # The auth app's validators look the function up by name at call time, so replacing it covers every one.
    mlflow_auth_app._get_request_param = get_request_param
