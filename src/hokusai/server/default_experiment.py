"""Calls aimed at MLflow's Default experiment (0), and where in each call that experiment is named.

A client with no experiment set names experiment 0, which belongs to MLflow's admin: a non-admin may not create runs,
logged models, traces, evaluation datasets or scorers there, so a bare `mlflow.start_run()` or `@mlflow.trace`
would fail with 403. The gateway points each such creation at the caller's private `Default (<owner>)` experiment
(`Upstream.default_experiment_id`), and widens a client's search of experiment 0 to that experiment too, so a bare
`mlflow.search_runs()` or `mlflow.search_traces()` finds what the bare calls made; calls on one scorer of experiment 0
go to that experiment instead, where a bare scorer was registered; and a prompt a bare client uses is linked to that
experiment rather than to 0. This module only knows the calls and their fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

from hokusai.server.paths import rest_and_ajax

DEFAULT_EXPERIMENT_ID = "0"
OTLP_TRACES = "/v1/traces"
# Spans exported over OTLP name their experiment in a header; the body is protobuf and is never touched.
OTLP_EXPERIMENT_HEADER = "x-mlflow-experiment-id"


@dataclass(frozen=True)
class ExperimentField:
    """Where a JSON body names its experiment: a path of keys to an id, or to a list of ids when `many`."""

    keys: tuple[str, ...]
    many: bool = False
    absent_means_default: bool = False

    def names_default(self, payload: dict[str, Any]) -> bool:
        container = self._container(payload)
        if container is None:
            return False
        if self.keys[-1] not in container:
            return self.absent_means_default
        value = container[self.keys[-1]]
        if self.many:
            return isinstance(value, list) and any(_is_default(item) for item in value)
        return _is_default(value)

    def point_at(self, payload: dict[str, Any], experiment_id: str) -> None:
        """Replace experiment 0 by `experiment_id`; call only when `names_default` is true."""
        container = self._container(payload)
        assert container is not None
        value = container.get(self.keys[-1], DEFAULT_EXPERIMENT_ID)
        if self.many:
            container[self.keys[-1]] = [experiment_id if _is_default(item) else item for item in value]
        else:
            container[self.keys[-1]] = experiment_id

    def _container(self, payload: dict[str, Any]) -> dict[str, Any] | None:
        container: Any = payload
        for key in self.keys[:-1]:
            container = container.get(key)
            if not isinstance(container, dict):
                return None
        return container


def _is_default(value: object) -> bool:
    return isinstance(value, str | int) and not isinstance(value, bool) and str(value) == DEFAULT_EXPERIMENT_ID


# Calls that create a run: each carries the `user_id` MLflow records (see `gateway.MlflowGateway._rewrite_create`).
RUN_CREATE = (*rest_and_ajax("/2.0/mlflow/runs/create"), *rest_and_ajax("/2.0/mlflow/runs/create-promptlab-run"))
# Calls that create a logged model or an evaluation dataset: MLflow takes their creator from an `mlflow.user` tag.
LOGGED_MODEL_CREATE = rest_and_ajax("/2.0/mlflow/logged-models")
DATASET_CREATE = rest_and_ajax("/3.0/mlflow/datasets/create")
_EXPERIMENT_ID = ExperimentField(("experiment_id",))
# MLflow's own client always names an experiment; a run or logged model sent without one is treated as experiment 0.
_EXPERIMENT_ID_OR_ABSENT = ExperimentField(("experiment_id",), absent_means_default=True)
CREATION_CALLS: dict[str, ExperimentField] = {
    **dict.fromkeys(rest_and_ajax("/2.0/mlflow/runs/create"), _EXPERIMENT_ID_OR_ABSENT),
    **dict.fromkeys(rest_and_ajax("/2.0/mlflow/runs/create-promptlab-run"), _EXPERIMENT_ID),
    **dict.fromkeys(rest_and_ajax("/2.0/mlflow/logged-models"), _EXPERIMENT_ID_OR_ABSENT),
    **dict.fromkeys(rest_and_ajax("/2.0/mlflow/traces"), _EXPERIMENT_ID),
    **dict.fromkeys(
        rest_and_ajax("/3.0/mlflow/traces"),
        ExperimentField(("trace", "trace_info", "trace_location", "mlflow_experiment", "experiment_id")),
    ),
    **dict.fromkeys(rest_and_ajax("/3.0/mlflow/datasets/create"), ExperimentField(("experiment_ids",), many=True)),
    **dict.fromkeys(rest_and_ajax("/3.0/mlflow/scorers/register"), _EXPERIMENT_ID),
}


@dataclass(frozen=True)
class SearchScope:
    """Where a search names its experiments: a list of ids, or (traces) a list of locations."""

    key: str
    locations: bool = False

    def names_default(self, payload: dict[str, Any]) -> bool:
        return any(_is_default(item) for item in self._ids(payload))

    def widen(self, payload: dict[str, Any], experiment_id: str) -> None:
        """Add `experiment_id` to what the search covers; experiment 0 stays in it."""
        if experiment_id in {str(item) for item in self._ids(payload)}:
            return
        if self.locations:
            payload[self.key].append(
                {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment_id}}
            )
        else:
            payload[self.key].append(experiment_id)

    def _ids(self, payload: dict[str, Any]) -> list[object]:
        items = payload.get(self.key)
        if not isinstance(items, list):
            return []
        if not self.locations:
            return items
        experiments = [item.get("mlflow_experiment") for item in items if isinstance(item, dict)]
        return [experiment.get("experiment_id") for experiment in experiments if isinstance(experiment, dict)]


# Only the client's REST paths: the web UI lists the caller's default experiment by itself, and a view of
# experiment 0 showing another experiment's runs would mislead.
SEARCH_CALLS: dict[str, SearchScope] = {
    "/api/2.0/mlflow/runs/search": SearchScope("experiment_ids"),
    "/api/2.0/mlflow/logged-models/search": SearchScope("experiment_ids"),
    "/api/3.0/mlflow/traces/search": SearchScope("locations", locations=True),
    "/api/3.0/mlflow/datasets/search": SearchScope("experiment_ids"),
}


# Calls that name one experiment's scorers (`list_scorers`, `get_scorer`, `delete_scorer` ...): a bare scorer was
# registered in `Default (<owner>)`, so the client's calls on experiment 0 are pointed there, in the query of the
# GETs and in the JSON body of the DELETE. REST paths only, as for the searches.
SCORER_CALLS = frozenset("/api/3.0/mlflow/scorers/" + call for call in ("list", "versions", "get", "delete"))
# The client's `delete_traces(experiment_id="0", ...)` (the active experiment of a bare client) means the traces its
# bare calls made, which are in `Default (<owner>)`; a non-admin may delete nothing in experiment 0 itself.
TRACE_DELETE_CALLS = frozenset(f"/api/{version}/mlflow/traces/delete-traces" for version in ("2.0", "3.0"))
# Where the scorer DELETE's body and the trace deletions name their experiment.
BODY_EXPERIMENT_FIELD = _EXPERIMENT_ID


def query_pointed_at(query_string: bytes, experiment_id: str) -> bytes | None:
    """`query_string` with `experiment_id=0` replaced by `experiment_id`; `None` when it does not name experiment 0."""
    # Latin-1 both ways keeps every byte as it came, whatever its encoding.
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True, encoding="latin-1")
    if not any(name == "experiment_id" and _is_default(value) for name, value in pairs):
        return None
    pointed = [
        (name, experiment_id if name == "experiment_id" and _is_default(value) else value) for name, value in pairs
    ]
    return urlencode(pointed, encoding="latin-1").encode("latin-1")


# The client links a prompt it registers or loads to its current experiment by a tag on the prompt (`,1,7,`, see
# `MlflowClient._link_prompt_to_experiment`); with no experiment set that is 0, the shared Default every user reads.
PROMPT_LINK_CALLS = frozenset(rest_and_ajax("/2.0/mlflow/registered-models/set-tag"))
PROMPT_EXPERIMENTS_TAG = "_mlflow_experiment_ids"


def links_prompt_to_default(payload: dict[str, Any]) -> bool:
    value = payload.get("value")
    return (
        payload.get("key") == PROMPT_EXPERIMENTS_TAG
        and isinstance(value, str)
        and DEFAULT_EXPERIMENT_ID in _listed_ids(value)
    )


def link_prompt_to(payload: dict[str, Any], experiment_id: str) -> None:
    """Replace experiment 0 in the tag's list by `experiment_id`; call only when `links_prompt_to_default` is true."""
    ids = [experiment_id if item == DEFAULT_EXPERIMENT_ID else item for item in _listed_ids(payload["value"])]
    payload["value"] = "," + ",".join(dict.fromkeys(ids)) + ","


def _listed_ids(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]
