"""`hokusai.mlflow_auth.refusals`: the resources a refused request names are read where MLflow's checks read them,
and GraphQL's refusal of an unknown run gives way to MLflow's "not found" only where everyone may read."""

from __future__ import annotations

import pytest
from flask import Flask

from hokusai.mlflow_auth import refusals
from hokusai.mlflow_auth.refusals import _graphql_check_passing_unknown_runs, _params_as_checked

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


@pytest.mark.parametrize(
    ("mlflow_allows", "field", "everyone_reads", "run_unknown", "expected"),
    [
        (True, "mlflowGetRun", False, False, True),  # MLflow's yes stands
        (False, "mlflowGetRun", True, True, True),  # the resolver then answers "Run ... not found"
        (False, "mlflowListArtifacts", True, True, True),
        (False, "mlflowGetRun", True, False, False),  # a run that exists stays refused: its owner may deny a user
        (False, "mlflowGetRun", False, True, False),  # NO_PERMISSIONS: existence is not revealed
        (False, "mlflowSearchRuns", True, True, False),  # only the fields that name one run
    ],
)
def test_graphql_lets_only_an_unknown_run_through_and_only_where_everyone_reads(
    monkeypatch: pytest.MonkeyPatch,
    mlflow_allows: bool,
    field: str,
    everyone_reads: bool,
    run_unknown: bool,
    expected: bool,
) -> None:
    monkeypatch.setattr(refusals, "_everyone_reads", lambda: everyone_reads)
    monkeypatch.setattr(refusals, "_run_is_unknown", lambda _input: run_unknown)
    check = _graphql_check_passing_unknown_runs(lambda _self, _field, _args, _user: mlflow_allows)

    assert check(object(), field, {"input": object()}, "bob") is expected
