"""`hokusai.mlflow_auth.param_types`: the 400 MLflow's handlers give a parameter of the wrong JSON type."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from mlflow.exceptions import MlflowException

from hokusai.mlflow_auth.param_types import install_param_type_check, wrong_type


@pytest.mark.parametrize("value", ["1", 5, True, None])
def test_single_values_pass(value: object) -> None:
    assert wrong_type("experiment_id", value) is None


def test_objects_and_lists_get_the_handlers_message() -> None:
    error = wrong_type("experiment_id", {"a": 1})

    assert isinstance(error, MlflowException) and error.error_code == "INVALID_PARAMETER_VALUE"
    assert error.message == (
        """Invalid value {"a":1} for parameter 'experiment_id' supplied:  Hint: Value was of type 'dict'. """
        "See the API docs for more information about request parameters."
    )
    assert "of type 'list'" in str(wrong_type("name", ["x"]))


def test_the_check_wraps_the_auth_apps_reader_once() -> None:
    app = SimpleNamespace(_get_request_param=lambda param: {"name": ["x"], "experiment_id": "1"}[param])

    install_param_type_check(app)
    install_param_type_check(app)

    assert app._get_request_param("experiment_id") == "1"
    with pytest.raises(MlflowException, match="parameter 'name'"):
        app._get_request_param("name")
