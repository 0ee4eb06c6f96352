"""`hokusai.mlflow_auth.params`: MLflow's 400 for a parameter of the wrong JSON type or named twice with two values."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import flask
import pytest
from mlflow.exceptions import MlflowException

from hokusai.mlflow_auth.params import (
    _parameter_sources,
    camel_case,
    conflict,
    install_param_checks,
    read_double_encoded_body_as_handlers_do,
    spellings,
    wrong_type,
)


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


def test_the_json_names_are_protobufs() -> None:
    assert [camel_case(field) for field in ("run_id", "filter_string1", "name")] == ["runId", "filterString1", "name"]


def test_a_runs_id_has_four_spellings_in_a_body_and_two_in_a_query() -> None:
    assert spellings("run_id", json_body=True) == ("run_id", "runId", "run_uuid", "runUuid")
    assert spellings("run_uuid", json_body=False) == ("run_id", "run_uuid")
    assert spellings("experiment_id", json_body=True) == ("experiment_id", "experimentId")
    assert spellings("experiment_id", json_body=False) == ("experiment_id",)


def test_spellings_conflict_only_when_they_name_two_values() -> None:
    assert conflict("run_id", {"'run_id'": "a", "'runId'": "a", "'run_uuid'": ""}) is None
    assert conflict("run_id", {"'run_uuid'": "a", "'runId'": None}) is None

    error = conflict("run_id", {"'run_uuid'": "mine", "'runId' in the body": "theirs"})

    assert isinstance(error, MlflowException) and error.error_code == "INVALID_PARAMETER_VALUE"
    assert error.message == (
        "Conflicting values for parameter 'run_id': 'run_uuid', 'runId' in the body name different resources. Send one "
        "of them."
    )


def _auth_app(args: dict[str, Any]) -> SimpleNamespace:
    def get_request_param(param: str) -> Any:
        if param not in args:
            raise MlflowException(f"Missing value for required parameter '{param}'.")
        return args[param]

    return SimpleNamespace(
        _get_request_param=get_request_param,
        _run_id_or_uuid_param=lambda: "from-mlflow",
        _find_validator=lambda req: None,
    )


def test_the_reader_refuses_what_the_handler_would_read_otherwise_and_is_installed_once() -> None:
    args = {"run_uuid": "mine", "runId": "theirs", "name": ["x"], "experiment_id": "1"}
    app = _auth_app(args)

    install_param_checks(app, lambda: {"": (args, True)})
    install_param_checks(app, lambda: {"": (args, True)})

    assert app._get_request_param("experiment_id") == "1"
    with pytest.raises(MlflowException, match="Conflicting values for parameter 'run_id': 'runId', 'run_uuid'"):
        app._get_request_param("run_uuid")
    with pytest.raises(MlflowException, match="parameter 'name'"):
        app._get_request_param("name")
    with pytest.raises(MlflowException, match="Missing value"):
        app._get_request_param("model_id")


def test_a_query_reads_no_camel_case() -> None:
    args = {"run_id": "mine", "runId": "theirs"}
    app = _auth_app(args)
    install_param_checks(app, lambda: {"": (args, False)})

    assert app._get_request_param("run_id") == "mine"


def test_a_delete_naming_one_model_in_its_query_and_another_in_its_body_is_refused() -> None:
    query, body = {"name": "mine"}, {"name": "theirs"}
    app = _auth_app(query)
    install_param_checks(app, lambda: {" in the query": (query, False), " in the body": (body, True)})

    with pytest.raises(MlflowException, match="'name' in the query, 'name' in the body name different resources"):
        app._get_request_param("name")


@pytest.mark.parametrize(
    ("method", "content_type", "read"),
    [
        ("GET", "text/plain", {"path": "mine", "query": "q"}),
        ("POST", "application/json", {"path": "mine", "body": "theirs"}),
        ("POST", "text/plain", {"path": "mine", "body": None}),  # the handler refuses a POST of this type
        ("PATCH", "application/json", {"path": "mine", "body": "theirs"}),
        ("PATCH", "text/plain", {"path": "mine", "body": "theirs"}),  # the fourth review's finalize
        ("DELETE", "application/json", {"path": "mine", "body": "theirs"}),
        ("DELETE", "text/plain", {"path": "mine", "query": "q", "body": "theirs"}),
    ],
)
def test_every_place_a_check_or_a_handler_reads_is_a_source(method: str, content_type: str, read: dict) -> None:
    app = flask.Flask(__name__)
    app.add_url_rule("/models/<model_id>", view_func=lambda model_id: model_id, methods=[method])
    body = '{"model_id": "theirs"}'
    with app.test_request_context("/models/mine?model_id=q", method=method, data=body, content_type=content_type):
        sources = _parameter_sources()
        # Reading the sources leaves unlabelled JSON unseen by the auth app's later reads, and the body to the handler.
        auth_app_reads = flask.request.get_json(silent=True)
        handler_reads = flask.request.get_json(force=True, silent=True)

    assert {where.removeprefix(" in the "): args.get("model_id") for where, (args, _) in sources.items()} == read
    assert auth_app_reads == (None if content_type == "text/plain" else {"model_id": "theirs"})
    assert handler_reads == {"model_id": "theirs"}


@pytest.mark.parametrize(
    ("query", "refused"),
    [("run_id=a&run_uuid=b", True), ("run_id=a&run_uuid=a", False), ("run_uuid=b", False), ("run_id=a", False)],
)
def test_an_artifact_query_naming_two_runs_is_refused(query: str, refused: bool) -> None:
    app = _auth_app({})
    install_param_checks(app, lambda: {"": ({}, False)})

    with flask.Flask(__name__).test_request_context("/ajax-api/2.0/mlflow/upload-artifact?" + query):
        if refused:
            with pytest.raises(MlflowException, match="'run_id', 'run_uuid' name different resources"):
                app._run_id_or_uuid_param()
        else:
            assert app._run_id_or_uuid_param() == "from-mlflow"


@pytest.mark.parametrize(
    ("body", "content_type", "read_as"),
    [
        ('"{\\"experiment_ids\\": [\\"1\\"]}"', "application/json", {"experiment_ids": ["1"]}),
        ('{"experiment_ids": ["1"]}', "application/json", {"experiment_ids": ["1"]}),
        ('"not an object"', "application/json", "not an object"),
        ('"{\\"a\\": 1}"', "text/plain", None),  # not JSON to the checks, and a POST of this type is the handler's 400
    ],
)
def test_a_double_encoded_body_is_read_as_the_object_it_holds(body: str, content_type: str, read_as: object) -> None:
    with flask.Flask(__name__).test_request_context("/", method="POST", data=body, content_type=content_type):
        read_double_encoded_body_as_handlers_do()

        assert flask.request.get_json(silent=True) == read_as


def test_a_body_nested_past_the_parsers_depth_is_mlflows_400_not_a_500() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    context = flask.Flask(__name__).test_request_context("/", method="POST", data=deep, content_type="application/json")
    with context, pytest.raises(MlflowException, match="nests JSON too deeply") as refused:
        read_double_encoded_body_as_handlers_do()

    assert refused.value.error_code == "INVALID_PARAMETER_VALUE"
