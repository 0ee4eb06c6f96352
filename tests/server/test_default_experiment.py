"""Where each call names MLflow's Default experiment, and how the gateway repoints or widens it."""

from __future__ import annotations

from typing import Any

import pytest

from hokusai.server.default_experiment import (
    CREATION_CALLS,
    SEARCH_CALLS,
    link_prompt_to,
    links_prompt_to_default,
    query_pointed_at,
)

RUN_CREATE = CREATION_CALLS["/api/2.0/mlflow/runs/create"]
TRACE_START = CREATION_CALLS["/api/3.0/mlflow/traces"]
DATASET_CREATE = CREATION_CALLS["/api/3.0/mlflow/datasets/create"]
SCORER_REGISTER = CREATION_CALLS["/ajax-api/3.0/mlflow/scorers/register"]


def _trace(experiment_id: object) -> dict[str, Any]:
    location = {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment_id}}
    return {"trace": {"trace_info": {"trace_id": "tr-1", "trace_location": location}}}


@pytest.mark.parametrize("value", ["0", 0])
def test_a_run_in_experiment_zero_is_repointed(value: object) -> None:
    payload = {"experiment_id": value, "start_time": 1}
    assert RUN_CREATE.names_default(payload)
    RUN_CREATE.point_at(payload, "12")
    assert payload == {"experiment_id": "12", "start_time": 1}


def test_a_run_without_an_experiment_is_repointed_but_a_scorer_without_one_is_left_to_mlflow() -> None:
    run: dict[str, Any] = {"start_time": 1}
    assert RUN_CREATE.names_default(run)
    RUN_CREATE.point_at(run, "12")
    assert run["experiment_id"] == "12"
    assert not SCORER_REGISTER.names_default({"name": "s"})


@pytest.mark.parametrize("value", ["5", "00", False, None, ["0"]])
def test_other_experiments_and_odd_values_are_left_alone(value: object) -> None:
    assert not RUN_CREATE.names_default({"experiment_id": value})


def test_a_trace_names_its_experiment_deep_in_its_location() -> None:
    payload = _trace("0")
    assert TRACE_START.names_default(payload)
    TRACE_START.point_at(payload, "12")
    assert payload == _trace("12")
    assert not TRACE_START.names_default(_trace("3"))
    assert not TRACE_START.names_default({"trace": {"trace_info": "not an object"}})
    assert not TRACE_START.names_default({})


def test_only_experiment_zero_is_replaced_in_a_list() -> None:
    payload = {"name": "ds", "experiment_ids": ["3", "0"]}
    assert DATASET_CREATE.names_default(payload)
    DATASET_CREATE.point_at(payload, "12")
    assert payload["experiment_ids"] == ["3", "12"]
    assert not DATASET_CREATE.names_default({"name": "ds"})


def test_a_search_of_experiment_zero_also_covers_the_default_experiment_once() -> None:
    scope = SEARCH_CALLS["/api/2.0/mlflow/runs/search"]
    payload = {"experiment_ids": ["0"], "max_results": 5}
    assert scope.names_default(payload)
    scope.widen(payload, "12")
    scope.widen(payload, "12")
    assert payload == {"experiment_ids": ["0", "12"], "max_results": 5}
    assert not scope.names_default({"experiment_ids": ["7"]})
    assert not scope.names_default({"experiment_ids": "0"})


def test_a_trace_search_gains_a_location() -> None:
    scope = SEARCH_CALLS["/api/3.0/mlflow/traces/search"]
    zero = {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": "0"}}
    payload: dict[str, Any] = {"locations": [zero, "junk"]}
    assert scope.names_default(payload)
    scope.widen(payload, "12")
    assert payload["locations"][-1] == {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": "12"}}
    assert len(payload["locations"]) == 3


def test_the_web_uis_searches_are_not_widened() -> None:
    assert "/ajax-api/2.0/mlflow/runs/search" not in SEARCH_CALLS
    assert "/ajax-api/2.0/mlflow/runs/create" in CREATION_CALLS


def test_a_scorer_query_on_experiment_0_is_pointed_at_the_default_and_keeps_the_rest() -> None:
    assert query_pointed_at(b"experiment_id=0&name=r%C3%A9l+1", "12") == b"experiment_id=12&name=r%C3%A9l+1"
    assert query_pointed_at(b"name=a&experiment_id=0&version=2", "7") == b"name=a&experiment_id=7&version=2"
    assert query_pointed_at(b"experiment_id=5&name=a", "7") is None
    assert query_pointed_at(b"name=0", "7") is None


def test_a_prompts_link_to_experiment_0_becomes_one_to_the_default_once() -> None:
    payload = {"name": "p", "key": "_mlflow_experiment_ids", "value": ",5,0,"}
    assert links_prompt_to_default(payload)
    link_prompt_to(payload, "12")
    assert payload["value"] == ",5,12,"
    already = {"name": "p", "key": "_mlflow_experiment_ids", "value": ",12,0,"}
    link_prompt_to(already, "12")
    assert already["value"] == ",12,"
    assert not links_prompt_to_default({"key": "_mlflow_experiment_ids", "value": ",10,"})
    assert not links_prompt_to_default({"key": "other", "value": ",0,"})
