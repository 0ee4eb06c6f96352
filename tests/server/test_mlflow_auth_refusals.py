"""`hokusai.mlflow_auth.refusals`: the resources a refused request names are read where MLflow's checks read them."""

from __future__ import annotations

import pytest
from flask import Flask

from hokusai.mlflow_auth.refusals import _params_as_checked

APP = Flask(__name__)
PATH = "/api/2.0/mlflow/experiments/update"


@pytest.mark.parametrize(
    ("method", "query", "body", "expected"),
    [
        ("GET", "?experiment_id=7", None, {"experiment_id": "7"}),
        ("POST", "?experiment_id=999", {"experiment_id": "5"}, {"experiment_id": "5"}),  # the query is not checked
        ("POST", "?experiment_id=999", None, {}),
        ("PATCH", "", {"name": "m"}, {"name": "m"}),
        ("DELETE", "?name=q", {"name": "b"}, {"name": "b"}),
        ("DELETE", "?name=q", None, {"name": "q"}),
    ],
)
def test_parameters_come_from_where_mlflows_checks_read_them(
    method: str, query: str, body: dict[str, str] | None, expected: dict[str, str]
) -> None:
    with APP.test_request_context(PATH + query, method=method, json=body):
        assert _params_as_checked() == expected
