"""Differential compatibility: one scripted REST sequence against a plain `mlflow server` and through the gateway.

The same ~150 calls (tracking, registry, proxied artifacts incl. the artifact root, traces, logged models, invalid
parameters and unknown ids) run straight against a stock MLflow without authentication, and through the Hokusai
gateway as an ordinary user working on their own resources. Ids differ between the servers, so each step is a
template filled from a per-server context that earlier steps capture from responses.

For every step the test compares the status code, MLflow's `error_code`, the error message (ids, names and
timestamps normalised), the top-level keys of a JSON success body, and optionally one observed value. Generic
normalisations, applied to every step:

- `layer` in the gateway's error JSON is ignored (the gateway marks which layer refused);
- a plain-text MLflow error arrives through the gateway wrapped as `{"error_code": <from the status>, "message":
  <the text>}` (an HTML page's title and paragraphs, without markup); the plain side is read the same way before
  comparing;
- a FastAPI-style `{"detail": ...}` error (MLflow's artifact and OTLP routes) arrives with `error_code` (from the
  status) and `message` (the detail) added; the plain side is read the same way.

Every remaining difference is listed, with its reason, in `KNOWN_DIFFERENCES`; any other difference fails the test,
and so does a listed difference that no longer occurs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from hokusai.server.errors import error_code_for_status, readable_error_text
from hokusai.server.runner import free_loopback_port
from tests.support.platform import LivePlatform, start_platform

pytestmark = pytest.mark.live

TS = 1_700_000_000_000
UNKNOWN_EXPERIMENT = "987654321"
UNKNOWN_RUN = "0" * 32
UNKNOWN_LOGGED_MODEL = "m-" + "0" * 32
UNKNOWN_TRACE = "tr-" + "0" * 32
UNKNOWN_DATASET = "d-" + "0" * 32
UNKNOWN_ISSUE = "iss-" + "0" * 32
UNKNOWN_JOB = "0" * 32
FORM = "application/x-www-form-urlencoded"
PLAIN_START_TIMEOUT = 120.0
REQUEST_TIMEOUT = 60.0

_AUTH_RUN_PARAM = (
    "MLflow auth app: its permission check reads the run id before the handler does and, finding neither run_id "
    "nor run_uuid, names 'run_uuid' in the 400 (mlflow/server/auth/__init__.py::_get_request_param); same status "
    "and error_code, different parameter name in the message."
)
_AUTH_FORM_BODY = (
    "MLflow auth app: its permission check reads the experiment id from the body before the handler checks the "
    "Content-Type, finds no JSON, and names the parameter in its 400; the plain server's 400 names the Content-Type "
    "instead. Same status and error_code."
)
_DEFAULT_EXPERIMENT = (
    "Experiment 0 (or none) is replaced by the caller's private 'Default (<owner>)' experiment: a non-admin may not "
    "write to MLflow's shared Default experiment, so a bare mlflow.start_run() or @mlflow.trace would otherwise fail."
)
_AUTH_ARTIFACT_ROOT = (
    "MLflow auth app: proxied artifact writes are authorised by the experiment id at the start of the path; a path "
    "at the artifact root belongs to no experiment and is refused to non-admins (mlflow#13832). Reads and listings "
    "there are allowed and match the plain server."
)

_AUTH_UNSCOPED_DATASETS = (
    "MLflow auth app: evaluation datasets are authorised by their experiments, so creating or searching them "
    "without experiment_ids is refused (a plain MLflow serves both); hokusai.mlflow_auth turns its bare 403 into a "
    "400 that says what to add."
)

# Step id -> why the gateway answers differently from a plain MLflow. The test fails on any difference not listed
# here, and on any listed step that no longer differs.
KNOWN_DIFFERENCES: dict[str, str] = {
    "users-current": "The plain server has no auth app (404); through the gateway every caller is an MLflow user.",
    "run-create-user-id": "The gateway stamps the authenticated owner as user_id; MLflow trusts any claimed value.",
    "run-create-default-experiment": _DEFAULT_EXPERIMENT,
    "run-create-no-experiment": _DEFAULT_EXPERIMENT + " (Plain MLflow even fails this one: a 400 from SQLite.)",
    "logged-model-create-default-experiment": _DEFAULT_EXPERIMENT,
    "trace-start-default-experiment": _DEFAULT_EXPERIMENT,
    "dataset-create-default-experiment": _DEFAULT_EXPERIMENT,
    "run-get-missing-param": _AUTH_RUN_PARAM,
    "run-log-inputs-missing-run": _AUTH_RUN_PARAM,
    "run-log-batch-missing-run": _AUTH_RUN_PARAM,
    "mv-get-artifact-unknown-model": (
        "MLflow auth app: its permission check looks the registered model up first and raises its own 404 "
        "'Registered Model with name=... not found'; the plain handler's 404 names the model version. Same status "
        "and code."
    ),
    "exp-set-tag-form-body": _AUTH_FORM_BODY,
    "run-create-form-body": _AUTH_FORM_BODY,
    "exp-get-by-name-unknown": (
        "MLflow auth app: its permission check looks the experiment up by name first and raises its own 404, "
        "whose message names it without quotes (_get_permission_from_experiment_name); same status and code."
    ),
    "metric-history-unknown-run": (
        "Plain MLflow answers an unknown run's metric history with an empty list (200) without looking the run up; "
        "the auth app must resolve the run to authorise the read, and the refusal is reported as the 404 "
        "'Run with id=... not found' (hokusai.mlflow_auth) rather than a misleading 403."
    ),
    "trace-batch-get-infos-unknown": (
        "MLflow auth app: a batch naming a trace that does not exist is refused (403) rather than answered with an "
        "empty list, so answers are no oracle for which trace ids exist (validate_can_batch_get_traces)."
    ),
    "artifact-put-root": _AUTH_ARTIFACT_ROOT,
    "dataset-create-no-experiment": _AUTH_UNSCOPED_DATASETS,
    "dataset-search-no-experiment": _AUTH_UNSCOPED_DATASETS,
    "issue-search-no-experiment": (
        "MLflow auth app: issues are authorised by their experiment, so a search without experiment_id is refused "
        "(a plain MLflow answers an empty page); hokusai.mlflow_auth turns its bare 403 into a 400 that says what "
        "to add."
    ),
    "dataset-create-unknown-experiment": (
        "Plain MLflow links the new dataset to an experiment that does not exist; the auth app needs UPDATE on it "
        "and refuses, reported as the 404 'No Experiment with id=... exists' (hokusai.mlflow_auth)."
    ),
    "dataset-delete-unknown": (
        "Plain MLflow answers deleting an unknown dataset with 200; the auth app must resolve the dataset's "
        "experiments to authorise the delete and refuses, reported as MLflow's own 404 (hokusai.mlflow_auth)."
    ),
    "artifact-get-root": "Follows from artifact-put-root: the file was never written, so reading it is a 404.",
    "run-log-metric-deleted-model": (
        "Plain MLflow logs a metric against a logged model that was deleted; the auth app must resolve the model to "
        "authorise the write and refuses, reported as MLflow's own 404 'Logged model with ID ... not found' "
        "(hokusai.mlflow_auth) rather than a 403 blaming permissions."
    ),
    "run-log-metric-unknown-model": (
        "Plain MLflow answers with a 400 quoting its database's foreign-key error; the auth app refuses a logged model "
        "it cannot find, reported as MLflow's own 404 (hokusai.mlflow_auth)."
    ),
    "run-log-outputs-unknown-model": (
        "Plain MLflow records an output naming a logged model that does not exist (200); the auth app refuses it, "
        "reported as MLflow's own 404 (hokusai.mlflow_auth)."
    ),
    "trace-artifact-get-unknown": (
        "MLflow auth app: refuses a trace it cannot find (403); hokusai.mlflow_auth reports it as the tracking "
        "store's 404 \"Trace with ID '...' not found.\", worded unlike the handler's; same status and code."
    ),
}


# Steps where the plain MLflow itself fails with a 5xx; the gateway must relay the same answer (as JSON), not hide it.
PLAIN_MLFLOW_FAULTS: dict[str, str] = {
    "exp-create-array-body": "MLflow 3.17.2 answers a JSON array body with an HTML 500 (it expects an object).",
}


# --- the scripted sequence -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    id: str
    method: str
    path: str
    params: dict[str, Any] | None = None
    json: Any = None
    content: bytes | None = None
    content_type: str | None = None  # instead of application/json (PUT bodies: instead of none)
    capture: Callable[[Any], dict[str, str]] | None = None
    observe: Callable[[Any], Any] | None = None


@dataclass(frozen=True)
class Outcome:
    status: int
    error_code: str | None = None
    message: str | None = None
    keys: tuple[str, ...] | None = None
    observed: Any = None
    layer: str | None = field(default=None, compare=False)  # which layer refused; never part of the comparison


def _exp_search(p: str) -> str:
    return f"name LIKE '{p}-%'"


def _names(items: list[dict[str, Any]] | None) -> list[str]:
    return sorted(item["name"] for item in items or [])


def _trace_info(trace_id: str, experiment: str) -> dict[str, Any]:
    return {
        "trace": {
            "trace_info": {
                "trace_id": trace_id,
                "trace_location": {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment}},
                "request_time": "2023-11-14T22:13:20Z",
                "execution_duration": "0.120s",
                "state": "OK",
                "trace_metadata": {"origin": "compat"},
                "tags": {"suite": "compat"},
                "request_preview": '{"x": 1}',
                "response_preview": "2",
            }
        }
    }


def build_steps() -> list[Step]:
    """The sequence. `{name}` in paths, params and JSON strings is filled from the context (prefix `p`, ids)."""
    api, api3, art = "/api/2.0/mlflow", "/api/3.0/mlflow", "/api/2.0/mlflow-artifacts/artifacts"
    run_art = art + "/{exp}/{run}/artifacts"
    model = "{p}-model"
    trace_location = {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": "{exp}"}}
    steps = [
        # server
        Step("server-version", "GET", "/version"),
        Step("server-health", "GET", "/health"),
        Step("server-info", "GET", api3 + "/server-info"),
        Step("unknown-endpoint", "GET", api + "/no-such-endpoint"),
        Step("wrong-method", "GET", api + "/experiments/create"),
        Step("users-current", "GET", api + "/users/current"),
        # experiments
        Step(
            "exp-create",
            "POST",
            api + "/experiments/create",
            json={"name": "{p}-exp", "tags": [{"key": "team", "value": "a"}]},
            capture=lambda j: {"exp": j["experiment_id"]},
        ),
        Step("exp-create-duplicate", "POST", api + "/experiments/create", json={"name": "{p}-exp"}),
        Step("exp-create-missing-name", "POST", api + "/experiments/create", json={}),
        Step("exp-create-malformed-json", "POST", api + "/experiments/create", content=b'{"name": '),
        Step("exp-create-array-body", "POST", api + "/experiments/create", json=[1, 2]),
        # what `curl -d` sends when no Content-Type is given
        Step("exp-create-form-body", "POST", api + "/experiments/create", json={"name": "{p}-form"}, content_type=FORM),
        Step(
            "exp-create-second",
            "POST",
            api + "/experiments/create",
            json={"name": "{p}-exp2"},
            capture=lambda j: {"exp2": j["experiment_id"]},
        ),
        Step("exp-get", "GET", api + "/experiments/get", params={"experiment_id": "{exp}"}),
        Step("exp-get-unknown", "GET", api + "/experiments/get", params={"experiment_id": UNKNOWN_EXPERIMENT}),
        Step("exp-get-non-numeric", "GET", api + "/experiments/get", params={"experiment_id": "abc"}),
        Step("exp-get-missing-param", "GET", api + "/experiments/get"),
        Step("exp-get-default", "GET", api + "/experiments/get", params={"experiment_id": "0"}),
        Step("exp-get-by-name", "GET", api + "/experiments/get-by-name", params={"experiment_name": "{p}-exp"}),
        Step(
            "exp-get-by-name-unknown", "GET", api + "/experiments/get-by-name", params={"experiment_name": "{p}-nope"}
        ),
        Step(
            "exp-search",
            "POST",
            api + "/experiments/search",
            json={"max_results": 10, "filter": "name LIKE '{p}-%'"},
            observe=lambda j: _names(j.get("experiments")),
        ),
        Step(
            "exp-search-get",
            "GET",
            api + "/experiments/search",
            params={"max_results": "5", "filter": "name = '{p}-exp'"},
            observe=lambda j: _names(j.get("experiments")),
        ),
        Step("exp-search-bad-filter", "POST", api + "/experiments/search", json={"max_results": 5, "filter": "nm ~ 1"}),
        Step("exp-search-zero-results", "POST", api + "/experiments/search", json={"max_results": 0}),
        Step("exp-search-huge-results", "POST", api + "/experiments/search", json={"max_results": 10**9}),
        Step(
            "exp-set-tag",
            "POST",
            api + "/experiments/set-experiment-tag",
            json={"experiment_id": "{exp}", "key": "stage", "value": "dev"},
        ),
        Step(
            "exp-set-tag-unknown",
            "POST",
            api + "/experiments/set-experiment-tag",
            json={"experiment_id": UNKNOWN_EXPERIMENT, "key": "stage", "value": "dev"},
        ),
        Step(
            "exp-set-tag-form-body",
            "POST",
            api + "/experiments/set-experiment-tag",
            json={"experiment_id": "{exp}", "key": "stage", "value": "dev"},
            content_type=FORM,
        ),
        Step(
            "exp-set-tag-missing-key",
            "POST",
            api + "/experiments/set-experiment-tag",
            json={"experiment_id": "{exp}", "value": "dev"},
        ),
        Step(
            "exp-delete-tag",
            "POST",
            api + "/experiments/delete-experiment-tag",
            json={"experiment_id": "{exp}", "key": "stage"},
        ),
        Step(
            "exp-delete-tag-absent",
            "POST",
            api + "/experiments/delete-experiment-tag",
            json={"experiment_id": "{exp}", "key": "absent"},
        ),
        Step(
            "exp-rename",
            "POST",
            api + "/experiments/update",
            json={"experiment_id": "{exp2}", "new_name": "{p}-exp2-renamed"},
        ),
        Step(
            "exp-rename-to-existing",
            "POST",
            api + "/experiments/update",
            json={"experiment_id": "{exp2}", "new_name": "{p}-exp"},
        ),
        Step(
            "exp-rename-unknown",
            "POST",
            api + "/experiments/update",
            json={"experiment_id": UNKNOWN_EXPERIMENT, "new_name": "{p}-x"},
        ),
        Step("exp-delete", "POST", api + "/experiments/delete", json={"experiment_id": "{exp2}"}),
        Step(
            "exp-get-deleted",
            "GET",
            api + "/experiments/get",
            params={"experiment_id": "{exp2}"},
            observe=lambda j: j["experiment"]["lifecycle_stage"],
        ),
        Step("exp-delete-again", "POST", api + "/experiments/delete", json={"experiment_id": "{exp2}"}),
        Step("exp-restore", "POST", api + "/experiments/restore", json={"experiment_id": "{exp2}"}),
        Step("exp-restore-active", "POST", api + "/experiments/restore", json={"experiment_id": "{exp2}"}),
        Step("exp-delete-unknown", "POST", api + "/experiments/delete", json={"experiment_id": UNKNOWN_EXPERIMENT}),
        # runs
        Step(
            "run-create",
            "POST",
            api + "/runs/create",
            json={
                "experiment_id": "{exp}",
                "start_time": TS,
                "run_name": "{p}-run",
                "tags": [{"key": "k", "value": "v"}],
            },
            capture=lambda j: {"run": j["run"]["info"]["run_id"]},
            observe=lambda j: j["run"]["info"]["run_name"],
        ),
        Step(
            "run-create-user-id",
            "POST",
            api + "/runs/create",
            json={"experiment_id": "{exp}", "start_time": TS, "user_id": "impostor"},
            capture=lambda j: {"run2": j["run"]["info"]["run_id"]},
            observe=lambda j: j["run"]["info"]["user_id"],
        ),
        Step(
            "run-create-default-experiment",
            "POST",
            api + "/runs/create",
            json={"experiment_id": "0", "start_time": TS},
            capture=lambda j: {"run0": j["run"]["info"]["run_id"]},
            observe=lambda j: j["run"]["info"]["experiment_id"] == "0",
        ),
        Step("run-create-form-body", "POST", api + "/runs/create", json={"experiment_id": "{exp}"}, content_type=FORM),
        Step("run-create-no-experiment", "POST", api + "/runs/create", json={"start_time": TS}),
        Step("run-create-unknown-experiment", "POST", api + "/runs/create", json={"experiment_id": UNKNOWN_EXPERIMENT}),
        # Parameters of the wrong JSON type: MLflow's auth app read them before the handler's 400, and failed (500).
        Step("run-create-object-experiment", "POST", api + "/runs/create", json={"experiment_id": {"a": 1}}),
        Step(
            "exp-update-list-experiment",
            "POST",
            api + "/experiments/update",
            json={"experiment_id": ["{exp}"], "new_name": "{p}-never"},
        ),
        Step(
            "run-create-bad-start-time",
            "POST",
            api + "/runs/create",
            json={"experiment_id": "{exp}", "start_time": "x"},
        ),
        Step(
            "run-get",
            "GET",
            api + "/runs/get",
            params={"run_id": "{run}"},
            observe=lambda j: j["run"]["info"]["status"],
        ),
        Step("run-get-run-uuid", "GET", api + "/runs/get", params={"run_uuid": "{run}"}),
        Step("run-get-unknown", "GET", api + "/runs/get", params={"run_id": UNKNOWN_RUN}),
        Step("run-get-missing-param", "GET", api + "/runs/get"),
        Step(
            "run-log-param",
            "POST",
            api + "/runs/log-parameter",
            json={"run_id": "{run}", "key": "alpha", "value": "0.1"},
        ),
        Step(
            "run-log-param-same",
            "POST",
            api + "/runs/log-parameter",
            json={"run_id": "{run}", "key": "alpha", "value": "0.1"},
        ),
        Step(
            "run-log-param-conflict",
            "POST",
            api + "/runs/log-parameter",
            json={"run_id": "{run}", "key": "alpha", "value": "0.2"},
        ),
        Step("run-log-param-missing-key", "POST", api + "/runs/log-parameter", json={"run_id": "{run}", "value": "1"}),
        Step(
            "run-log-param-unknown-run",
            "POST",
            api + "/runs/log-parameter",
            json={"run_id": UNKNOWN_RUN, "key": "alpha", "value": "1"},
        ),
        Step(
            "run-log-metric",
            "POST",
            api + "/runs/log-metric",
            json={"run_id": "{run}", "key": "loss", "value": 0.5, "timestamp": TS, "step": 0},
        ),
        Step(
            "run-log-metric-form-body",
            "POST",
            api + "/runs/log-metric",
            json={"run_id": "{run}", "key": "loss", "value": 0.5, "timestamp": TS, "step": 0},
            content_type=FORM,
        ),
        Step(
            "run-log-metric-step1",
            "POST",
            api + "/runs/log-metric",
            json={"run_id": "{run}", "key": "loss", "value": 0.25, "timestamp": TS + 1, "step": 1},
        ),
        Step(
            "run-log-metric-bad-value",
            "POST",
            api + "/runs/log-metric",
            json={"run_id": "{run}", "key": "loss", "value": "abc", "timestamp": TS},
        ),
        Step(
            "run-log-metric-missing-timestamp",
            "POST",
            api + "/runs/log-metric",
            json={"run_id": "{run}", "key": "loss", "value": 1.0},
        ),
        Step(
            "run-log-metric-unknown-run",
            "POST",
            api + "/runs/log-metric",
            json={"run_id": UNKNOWN_RUN, "key": "loss", "value": 1.0, "timestamp": TS},
        ),
        Step(
            "run-log-batch",
            "POST",
            api + "/runs/log-batch",
            json={
                "run_id": "{run}",
                "metrics": [{"key": "acc", "value": 0.9, "timestamp": TS, "step": 0}],
                "params": [{"key": "beta", "value": "2"}],
                "tags": [{"key": "phase", "value": "train"}],
            },
        ),
        Step("run-log-batch-missing-run", "POST", api + "/runs/log-batch", json={"metrics": []}),
        Step(
            "run-log-batch-too-many",
            "POST",
            api + "/runs/log-batch",
            json={
                "run_id": "{run}",
                "metrics": [{"key": "m", "value": 1.0, "timestamp": TS, "step": i} for i in range(1001)],
            },
        ),
        Step(
            "run-log-batch-bad-param-key",
            "POST",
            api + "/runs/log-batch",
            json={"run_id": "{run}", "params": [{"key": "bad|key", "value": "1"}]},
        ),
        Step("run-set-tag", "POST", api + "/runs/set-tag", json={"run_id": "{run}", "key": "note", "value": "hello"}),
        Step(
            "run-set-tag-unknown-run",
            "POST",
            api + "/runs/set-tag",
            json={"run_id": UNKNOWN_RUN, "key": "note", "value": "hello"},
        ),
        Step("run-delete-tag", "POST", api + "/runs/delete-tag", json={"run_id": "{run}", "key": "note"}),
        Step("run-delete-tag-absent", "POST", api + "/runs/delete-tag", json={"run_id": "{run}", "key": "absent"}),
        Step(
            "run-log-inputs",
            "POST",
            api + "/runs/log-inputs",
            json={
                "run_id": "{run}",
                "datasets": [
                    {
                        "dataset": {"name": "ds", "digest": "abc123", "source_type": "local", "source": "/tmp/ds"},
                        "tags": [{"key": "mlflow.data.context", "value": "train"}],
                    }
                ],
            },
        ),
        Step("run-log-inputs-missing-run", "POST", api + "/runs/log-inputs", json={"datasets": []}),
        Step(
            "run-update",
            "POST",
            api + "/runs/update",
            json={"run_id": "{run}", "status": "FINISHED", "end_time": TS + 1000},
            observe=lambda j: j["run_info"]["status"],
        ),
        Step("run-update-bad-status", "POST", api + "/runs/update", json={"run_id": "{run}", "status": "EXPLODED"}),
        Step("run-update-unknown", "POST", api + "/runs/update", json={"run_id": UNKNOWN_RUN, "status": "FINISHED"}),
        Step(
            "metric-history",
            "GET",
            api + "/metrics/get-history",
            params={"run_id": "{run}", "metric_key": "loss"},
            observe=lambda j: [m["value"] for m in j.get("metrics", [])],
        ),
        Step(
            "metric-history-unknown-key",
            "GET",
            api + "/metrics/get-history",
            params={"run_id": "{run}", "metric_key": "x"},
        ),
        Step(
            "metric-history-unknown-run",
            "GET",
            api + "/metrics/get-history",
            params={"run_id": UNKNOWN_RUN, "metric_key": "loss"},
        ),
        Step(
            "metric-history-bulk-interval",
            "GET",
            "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval",
            params={"run_ids": "{run}", "metric_key": "loss", "max_results": "10"},
            observe=lambda j: len(j.get("metrics", [])),
        ),
        Step(
            "metric-history-bulk-interval-missing-key",
            "GET",
            "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval",
            params={"run_ids": "{run}"},
        ),
        Step(
            "runs-search",
            "POST",
            api + "/runs/search",
            json={"experiment_ids": ["{exp}"], "filter": "metrics.loss < 1", "order_by": ["start_time DESC"]},
            observe=lambda j: len(j.get("runs", [])),
        ),
        Step(
            "runs-search-bad-filter",
            "POST",
            api + "/runs/search",
            json={"experiment_ids": ["{exp}"], "filter": "metrics.loss <<< 1"},
        ),
        Step(
            "runs-search-bad-order-by",
            "POST",
            api + "/runs/search",
            json={"experiment_ids": ["{exp}"], "order_by": ["nope.x"]},
        ),
        Step(
            "runs-search-unknown-experiment",
            "POST",
            api + "/runs/search",
            json={"experiment_ids": [UNKNOWN_EXPERIMENT]},
            observe=lambda j: len(j.get("runs", [])),
        ),
        Step("run-delete", "POST", api + "/runs/delete", json={"run_id": "{run2}"}),
        Step("run-restore", "POST", api + "/runs/restore", json={"run_id": "{run2}"}),
        Step("run-delete-unknown", "POST", api + "/runs/delete", json={"run_id": UNKNOWN_RUN}),
        # proxied artifacts
        Step("artifact-put", "PUT", run_art + "/hello.txt", content=b"hello compat"),
        Step("artifact-put-second", "PUT", run_art + "/scratch.txt", content=b"to be deleted"),
        Step("artifact-put-nested", "PUT", run_art + "/data/part-0.csv", content=b"a,b\nx,y\n"),
        Step(
            "artifact-put-permissions-folder", "PUT", run_art + "/permissions/notes.txt", content=b"not an admin path"
        ),
        Step("artifact-put-percent-name", "PUT", run_art + "/100%25.txt", content=b"percent"),
        Step("artifact-get", "GET", run_art + "/hello.txt", observe=lambda text: text),
        Step("artifact-get-nested", "GET", run_art + "/data/part-0.csv", observe=lambda text: text),
        Step("artifact-get-permissions-folder", "GET", run_art + "/permissions/notes.txt", observe=lambda text: text),
        Step("artifact-get-percent-name", "GET", run_art + "/100%25.txt", observe=lambda text: text),
        Step("artifact-get-missing", "GET", run_art + "/missing.txt"),
        Step("artifact-get-directory", "GET", run_art + "/data"),
        Step("artifact-put-no-filename", "PUT", run_art + "/data/", content=b"no file name"),
        Step(
            "artifact-list-run",
            "GET",
            art,
            params={"path": "{exp}/{run}/artifacts"},
            observe=lambda j: sorted(f["path"] for f in j.get("files", [])),
        ),
        Step("artifact-list-root", "GET", art),
        Step("artifact-put-root", "PUT", art + "/{p}-root.txt", content=b"at the root"),
        Step("artifact-get-root", "GET", art + "/{p}-root.txt"),
        Step("artifact-get-root-missing", "GET", art + "/{p}-absent.txt"),
        Step("artifact-delete", "DELETE", run_art + "/scratch.txt"),
        Step("artifact-get-deleted", "GET", run_art + "/scratch.txt"),
        Step(
            "artifacts-list",
            "GET",
            api + "/artifacts/list",
            params={"run_id": "{run}"},
            observe=lambda j: sorted(f["path"] for f in j.get("files", [])),
        ),
        Step(
            "artifacts-list-subdir",
            "GET",
            api + "/artifacts/list",
            params={"run_id": "{run}", "path": "data"},
            observe=lambda j: sorted(f["path"] for f in j.get("files", [])),
        ),
        Step("artifacts-list-unknown-run", "GET", api + "/artifacts/list", params={"run_id": UNKNOWN_RUN}),
        Step("artifacts-list-traversal", "GET", api + "/artifacts/list", params={"run_id": "{run}", "path": "../.."}),
        Step(
            "legacy-get-artifact",
            "GET",
            "/get-artifact",
            params={"path": "hello.txt", "run_uuid": "{run}"},
            observe=lambda text: text,
        ),
        Step("legacy-get-artifact-missing", "GET", "/get-artifact", params={"path": "nope.txt", "run_uuid": "{run}"}),
        # model registry
        Step(
            "rm-create",
            "POST",
            api + "/registered-models/create",
            json={"name": model, "description": "d", "tags": [{"key": "k", "value": "v"}]},
        ),
        Step("rm-create-duplicate", "POST", api + "/registered-models/create", json={"name": model}),
        Step("rm-create-missing-name", "POST", api + "/registered-models/create", json={}),
        Step("rm-get", "GET", api + "/registered-models/get", params={"name": model}),
        Step("rm-get-unknown", "GET", api + "/registered-models/get", params={"name": "{p}-absent"}),
        Step(
            "rm-search",
            "GET",
            api + "/registered-models/search",
            params={"filter": "name LIKE '{p}-%'"},
            observe=lambda j: _names(j.get("registered_models")),
        ),
        Step("rm-search-bad-filter", "GET", api + "/registered-models/search", params={"filter": "name ~ 'x'"}),
        Step("rm-update", "PATCH", api + "/registered-models/update", json={"name": model, "description": "new"}),
        Step(
            "rm-update-unknown",
            "PATCH",
            api + "/registered-models/update",
            json={"name": "{p}-absent", "description": "x"},
        ),
        Step("rm-set-tag", "POST", api + "/registered-models/set-tag", json={"name": model, "key": "t", "value": "1"}),
        Step("rm-delete-tag", "DELETE", api + "/registered-models/delete-tag", json={"name": model, "key": "t"}),
        Step(
            "mv-create",
            "POST",
            api + "/model-versions/create",
            json={"name": model, "source": "mlflow-artifacts:/{exp}/{run}/artifacts/data", "run_id": "{run}"},
            observe=lambda j: j["model_version"]["version"],
        ),
        Step(
            "mv-create-unknown-model",
            "POST",
            api + "/model-versions/create",
            json={"name": "{p}-absent", "source": "mlflow-artifacts:/{exp}/{run}/artifacts/data", "run_id": "{run}"},
        ),
        Step("mv-create-bad-source", "POST", api + "/model-versions/create", json={"name": model, "source": "/etc"}),
        Step("mv-get", "GET", api + "/model-versions/get", params={"name": model, "version": "1"}),
        Step("mv-get-unknown-version", "GET", api + "/model-versions/get", params={"name": model, "version": "99"}),
        Step("mv-get-bad-version", "GET", api + "/model-versions/get", params={"name": model, "version": "abc"}),
        Step(
            "mv-update",
            "PATCH",
            api + "/model-versions/update",
            json={"name": model, "version": "1", "description": "v1"},
        ),
        Step(
            "mv-set-tag",
            "POST",
            api + "/model-versions/set-tag",
            json={"name": model, "version": "1", "key": "t", "value": "1"},
        ),
        Step(
            "mv-delete-tag",
            "DELETE",
            api + "/model-versions/delete-tag",
            json={"name": model, "version": "1", "key": "t"},
        ),
        Step(
            "mv-transition-stage",
            "POST",
            api + "/model-versions/transition-stage",
            json={"name": model, "version": "1", "stage": "Staging", "archive_existing_versions": False},
        ),
        Step(
            "mv-transition-bad-stage",
            "POST",
            api + "/model-versions/transition-stage",
            json={"name": model, "version": "1", "stage": "Nowhere", "archive_existing_versions": False},
        ),
        Step(
            "mv-search",
            "GET",
            api + "/model-versions/search",
            params={"filter": "name='{p}-model'"},
            observe=lambda j: [v["version"] for v in j.get("model_versions", [])],
        ),
        Step("mv-search-bad-filter", "GET", api + "/model-versions/search", params={"filter": "name=== 'x'"}),
        Step(
            "mv-download-uri", "GET", api + "/model-versions/get-download-uri", params={"name": model, "version": "1"}
        ),
        Step(
            "mv-get-artifact",
            "GET",
            "/model-versions/get-artifact",
            params={"path": "part-0.csv", "name": model, "version": "1"},
            observe=lambda text: text,
        ),
        Step(
            "mv-get-artifact-unknown-model",
            "GET",
            "/model-versions/get-artifact",
            params={"path": "part-0.csv", "name": "{p}-no-such-model", "version": "1"},
        ),
        Step(
            "rm-latest-versions",
            "POST",
            api + "/registered-models/get-latest-versions",
            json={"name": model},
            observe=lambda j: [v["version"] for v in j.get("model_versions", [])],
        ),
        Step(
            "rm-alias-set",
            "POST",
            api + "/registered-models/alias",
            json={"name": model, "alias": "champion", "version": "1"},
        ),
        Step("rm-alias-get", "GET", api + "/registered-models/alias", params={"name": model, "alias": "champion"}),
        Step("rm-alias-get-unknown", "GET", api + "/registered-models/alias", params={"name": model, "alias": "nope"}),
        Step(
            "rm-alias-set-unknown-version",
            "POST",
            api + "/registered-models/alias",
            json={"name": model, "alias": "ghost", "version": "99"},
        ),
        Step("rm-alias-delete", "DELETE", api + "/registered-models/alias", json={"name": model, "alias": "champion"}),
        Step(
            "rm-rename",
            "POST",
            api + "/registered-models/rename",
            json={"name": model, "new_name": "{p}-model-renamed"},
        ),
        Step("rm-rename-list-name", "POST", api + "/registered-models/rename", json={"name": [model], "new_name": "x"}),
        Step(
            "rm-rename-back",
            "POST",
            api + "/registered-models/rename",
            json={"name": "{p}-model-renamed", "new_name": model},
        ),
        Step(
            "rm-rename-unknown",
            "POST",
            api + "/registered-models/rename",
            json={"name": "{p}-absent", "new_name": "{p}-x"},
        ),
        Step("mv-delete", "DELETE", api + "/model-versions/delete", json={"name": model, "version": "1"}),
        Step("mv-delete-unknown", "DELETE", api + "/model-versions/delete", json={"name": model, "version": "99"}),
        Step("rm-delete", "DELETE", api + "/registered-models/delete", json={"name": model}),
        Step("rm-delete-unknown", "DELETE", api + "/registered-models/delete", json={"name": "{p}-absent"}),
        # logged models
        Step(
            "logged-model-create",
            "POST",
            api + "/logged-models",
            json={"experiment_id": "{exp}", "name": "{p}-lm", "source_run_id": "{run}"},
            capture=lambda j: {"lm": j["model"]["info"]["model_id"]},
            observe=lambda j: j["model"]["info"]["status"],
        ),
        Step(
            "logged-model-create-default-experiment",
            "POST",
            api + "/logged-models",
            json={"experiment_id": "0", "name": "{p}-lm0"},
            observe=lambda j: j["model"]["info"]["experiment_id"] == "0",
        ),
        Step(
            "logged-model-create-unknown-experiment",
            "POST",
            api + "/logged-models",
            json={"experiment_id": UNKNOWN_EXPERIMENT, "name": "{p}-x"},
        ),
        Step("logged-model-get", "GET", api + "/logged-models/{lm}", observe=lambda j: j["model"]["info"]["name"]),
        Step("logged-model-get-unknown", "GET", api + "/logged-models/" + UNKNOWN_LOGGED_MODEL),
        Step("logged-model-get-malformed-id", "GET", api + "/logged-models/m-nope"),
        Step("logged-model-get-foreign-id", "GET", api + "/logged-models/not-a-model-id"),
        Step("logged-model-artifacts-foreign-id", "GET", api + "/logged-models/not-a-model-id/artifacts/directories"),
        Step(
            "logged-model-search",
            "POST",
            api + "/logged-models/search",
            json={"experiment_ids": ["{exp}"]},
            observe=lambda j: [m["info"]["name"] for m in j.get("models", [])],
        ),
        Step(
            "logged-model-search-bad-filter",
            "POST",
            api + "/logged-models/search",
            json={"experiment_ids": ["{exp}"], "filter": "name ~~ 1"},
        ),
        Step(
            "logged-model-set-tags",
            "PATCH",
            api + "/logged-models/{lm}/tags",
            json={"tags": [{"key": "k", "value": "v"}]},
        ),
        Step("logged-model-delete-tag", "DELETE", api + "/logged-models/{lm}/tags/k"),
        Step(
            "logged-model-log-params",
            "POST",
            api + "/logged-models/{lm}/params",
            json={"model_id": "{lm}", "params": [{"key": "p", "value": "1"}]},
        ),
        Step(
            "logged-model-artifact-put", "PUT", art + "/{exp}/models/{lm}/artifacts/MLmodel", content=b"flavors: {}\n"
        ),
        Step(
            "logged-model-list-artifacts",
            "GET",
            api + "/logged-models/{lm}/artifacts/directories",
            observe=lambda j: sorted(f["path"] for f in j.get("files", [])),
        ),
        Step(
            "logged-model-finalize",
            "PATCH",
            api + "/logged-models/{lm}",
            json={"model_id": "{lm}", "status": "LOGGED_MODEL_READY"},
            observe=lambda j: j["model"]["info"]["status"],
        ),
        Step(
            "logged-model-finalize-bad-status",
            "PATCH",
            api + "/logged-models/{lm}",
            json={"model_id": "{lm}", "status": "NOPE"},
        ),
        Step("logged-model-delete", "DELETE", api + "/logged-models/{lm}"),
        Step("logged-model-get-deleted", "GET", api + "/logged-models/{lm}"),
        # logged models named in a run's writes (MLflow's checks read each one)
        Step(
            "run-log-metric-deleted-model",
            "POST",
            api + "/runs/log-metric",
            json={"run_id": "{run}", "key": "lm", "value": 1.0, "timestamp": TS, "model_id": "{lm}"},
        ),
        Step(
            "run-log-metric-unknown-model",
            "POST",
            api + "/runs/log-metric",
            json={"run_id": "{run}", "key": "lm", "value": 1.0, "timestamp": TS, "model_id": UNKNOWN_LOGGED_MODEL},
        ),
        Step(
            "run-log-outputs-unknown-model",
            "POST",
            api + "/runs/outputs",
            json={"run_id": "{run}", "models": [{"model_id": UNKNOWN_LOGGED_MODEL, "step": 0}]},
        ),
        # scorers
        Step(
            "scorer-delete-unknown",
            "DELETE",
            api3 + "/scorers/delete",
            json={"experiment_id": "{exp}", "name": "{p}-no-scorer"},
        ),
        Step("scorer-get-unknown", "GET", api3 + "/scorers/get", params={"experiment_id": "{exp}", "name": "{p}-none"}),
        # traces
        Step(
            "trace-start",
            "POST",
            api3 + "/traces",
            json=_trace_info("{trace}", "{exp}"),
            observe=lambda j: j["trace"]["trace_info"]["state"],
        ),
        Step(
            "trace-get-info",
            "GET",
            api3 + "/traces/{trace}",
            observe=lambda j: j["trace"]["trace_info"]["tags"].get("suite"),
        ),
        Step(
            "trace-start-default-experiment",
            "POST",
            api3 + "/traces",
            json=_trace_info("{trace0}", "0"),
            observe=lambda j: j["trace"]["trace_info"]["trace_location"]["mlflow_experiment"]["experiment_id"] == "0",
        ),
        Step("trace-start-no-trace", "POST", api3 + "/traces", json={}),
        Step("trace-get-unknown", "GET", api3 + "/traces/" + UNKNOWN_TRACE),
        Step(
            "trace-artifact-get-unknown",  # what the web UI fetches to show a trace
            "GET",
            "/ajax-api/2.0/mlflow/get-trace-artifact",
            params={"request_id": UNKNOWN_TRACE},
        ),
        Step(
            "trace-search",
            "POST",
            api3 + "/traces/search",
            json={"locations": [trace_location], "max_results": 10},
            observe=lambda j: len(j.get("traces", [])),
        ),
        Step(
            "trace-search-bad-filter",
            "POST",
            api3 + "/traces/search",
            json={"locations": [trace_location], "filter": "nonsense ~~ 1"},
        ),
        Step("trace-set-tag", "PATCH", api3 + "/traces/{trace}/tags", json={"key": "k", "value": "v"}),
        Step("trace-delete-tag", "DELETE", api3 + "/traces/{trace}/tags", params={"key": "k"}),
        Step(
            "trace-artifact-put",
            "PUT",
            art + "/{exp}/traces/{trace}/artifacts/traces.json",
            content=b'{"spans": []}',
        ),
        Step(
            "trace-batch-get-infos-unknown",
            "POST",
            api3 + "/traces/batchGetInfos",
            json={"trace_ids": [UNKNOWN_TRACE]},
            observe=lambda j: len(j.get("trace_infos", [])),
        ),
        Step("trace-batch-get-infos-no-ids", "POST", api3 + "/traces/batchGetInfos", json={}),
        Step("trace-search-v3-no-locations", "POST", api3 + "/traces/search", json={}),
        Step("trace-search-v2-no-experiments", "GET", api + "/traces"),
        Step("trace-metrics-no-experiments", "POST", api3 + "/traces/metrics", json={}),
        Step(
            "trace-batch-get-infos",
            "POST",
            api3 + "/traces/batchGetInfos",
            json={"trace_ids": ["{trace}"]},
            observe=lambda j: len(j.get("trace_infos", [])),
        ),
        Step(
            "trace-assessment-create",
            "POST",
            api3 + "/traces/{trace}/assessments",
            json={
                "assessment": {
                    "assessment_name": "quality",
                    "trace_id": "{trace}",
                    "source": {"source_type": "CODE", "source_id": "compat"},
                    "feedback": {"value": True},
                }
            },
            capture=lambda j: {"assessment": j["assessment"]["assessment_id"]},
        ),
        Step(
            "trace-assessment-get",
            "GET",
            api3 + "/traces/{trace}/assessments/{assessment}",
            observe=lambda j: j["assessment"]["assessment_name"],
        ),
        Step("trace-assessment-get-unknown", "GET", api3 + "/traces/{trace}/assessments/a-unknown"),
        Step("trace-assessment-delete", "DELETE", api3 + "/traces/{trace}/assessments/{assessment}"),
        Step(
            "trace-link-to-run", "POST", api + "/traces/link-to-run", json={"trace_ids": ["{trace}"], "run_id": "{run}"}
        ),
        Step(
            "trace-delete",
            "POST",
            api3 + "/traces/delete-traces",
            json={"experiment_id": "{exp}", "request_ids": ["{trace}"]},
            observe=lambda j: j.get("traces_deleted"),
        ),
        Step("trace-delete-no-criteria", "POST", api3 + "/traces/delete-traces", json={"experiment_id": "{exp}"}),
        # evaluation datasets
        Step(
            "dataset-create",
            "POST",
            api3 + "/datasets/create",
            json={"name": "{p}-ds", "experiment_ids": ["{exp}"]},
            capture=lambda j: {"ds": j["dataset"]["dataset_id"]},
            observe=lambda j: (j["dataset"]["name"], j["dataset"]["experiment_ids"]),
        ),
        Step("dataset-create-no-experiment", "POST", api3 + "/datasets/create", json={"name": "{p}-ds-x"}),
        Step(
            "dataset-create-default-experiment",
            "POST",
            api3 + "/datasets/create",
            json={"name": "{p}-ds-0", "experiment_ids": ["0"]},
            observe=lambda j: j["dataset"]["experiment_ids"] == ["0"],
        ),
        Step(
            "dataset-create-unknown-experiment",
            "POST",
            api3 + "/datasets/create",
            json={"name": "{p}-ds-y", "experiment_ids": [UNKNOWN_EXPERIMENT]},
        ),
        Step("dataset-get", "GET", api3 + "/datasets/{ds}", observe=lambda j: j["dataset"]["name"]),
        Step("dataset-get-unknown", "GET", api3 + "/datasets/" + UNKNOWN_DATASET),
        Step(
            "dataset-search",
            "POST",
            api3 + "/datasets/search",
            json={"experiment_ids": ["{exp}"]},
            observe=lambda j: _names(j.get("datasets")),
        ),
        Step("dataset-search-no-experiment", "POST", api3 + "/datasets/search", json={}),
        Step("dataset-delete", "DELETE", api3 + "/datasets/{ds}"),
        Step("dataset-delete-unknown", "DELETE", api3 + "/datasets/" + UNKNOWN_DATASET),
        # issues and jobs (MLflow 3.17's GenAI issue tracking and background jobs)
        Step("issue-get-unknown", "GET", api3 + "/issues/" + UNKNOWN_ISSUE),
        Step("issue-search", "POST", api3 + "/issues/search", json={"experiment_id": "{exp}"}),
        Step("issue-search-no-experiment", "POST", api3 + "/issues/search", json={}),
        Step("job-get-unknown", "GET", "/ajax-api/3.0/mlflow/jobs/" + UNKNOWN_JOB),
        # GraphQL (the web UI's read path)
        Step(
            "graphql-get-experiment",
            "POST",
            "/graphql",
            json={"query": 'query { mlflowGetExperiment(input: { experimentId: "{exp}" }) { experiment { name } } }'},
            observe=lambda j: j.get("data"),
        ),
        Step(
            "graphql-get-run",  # the web UI's run page
            "POST",
            "/graphql",
            json={"query": 'query { mlflowGetRun(input: { runId: "{run}" }) { run { info { status } } } }'},
            observe=_graphql_answer,
        ),
        Step(
            "graphql-get-run-unknown",
            "POST",
            "/graphql",
            json={
                "query": f'query {{ mlflowGetRun(input: {{ runId: "{UNKNOWN_RUN}" }}) '
                "{ run { info { status } } } }"
            },
            observe=_graphql_answer,
        ),
        Step(
            "graphql-get-experiment-unknown",
            "POST",
            "/graphql",
            json={
                "query": f'query {{ mlflowGetExperiment(input: {{ experimentId: "{UNKNOWN_EXPERIMENT}" }}) '
                "{ experiment { name } } }"
            },
            observe=_graphql_answer,
        ),
        Step("graphql-invalid-query", "POST", "/graphql", json={"query": "query { nonsense }"}),
    ]
    return steps


def _graphql_answer(answer: dict[str, Any]) -> tuple[Any, Any]:
    """A GraphQL answer's data and its errors (MLflow's are strings): a refusal shows as null data without an error."""
    return answer.get("data"), answer.get("errors")


# --- running and comparing ---------------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{(\w+)\}")


class MissingContext(Exception):
    pass


def _fill(template: Any, ctx: dict[str, str]) -> Any:
    if isinstance(template, str):

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in ctx:
                raise MissingContext(name)
            return ctx[name]

        return _PLACEHOLDER.sub(replace, template)
    if isinstance(template, dict):
        return {key: _fill(value, ctx) for key, value in template.items()}
    if isinstance(template, list):
        return [_fill(value, ctx) for value in template]
    return template


_SET_REPR = re.compile(r"\{('[^']*'(?:, '[^']*')+)\}")


def _normalise(text: str, ctx: dict[str, str]) -> str:
    # Captured ids and names first (longest first, so an id never half-replaces a longer one), then generic shapes.
    # An id counts only as a whole token: experiment "1" must not rewrite the "1" in "0.1" or in a file name.
    for name, value in sorted(ctx.items(), key=lambda item: -len(item[1])):
        if value:
            text = re.sub(rf"(?<![\w.-]){re.escape(value)}(?!\w|\.\d)", f"<{name}>", text)
    text = re.sub(r"\b(?:tr|m|a)-[0-9a-f]{32}\b", "<id>", text)
    text = re.sub(r"\b[0-9a-f]{32}\b", "<hex>", text)
    text = re.sub(r"\b\d{13}\b", "<ts>", text)
    # Python sets in messages ("Valid keys are '{...}'") print in per-process hash order.
    return _SET_REPR.sub(lambda m: "{" + ", ".join(sorted(m.group(1).split(", "))) + "}", text)


def _outcome(step: Step, response: httpx.Response, ctx: dict[str, str]) -> Outcome:
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if response.status_code >= 400:
        if isinstance(payload, dict) and set(payload) == {"detail"}:
            # FastAPI's form, from MLflow's artifact and OTLP routes; the gateway adds the envelope's fields to it.
            detail = payload["detail"]
            payload = {"message": detail if isinstance(detail, str) and detail else json.dumps(detail)}
            payload["error_code"] = error_code_for_status(response.status_code)
        if isinstance(payload, dict) and ("error_code" in payload or "message" in payload):
            return Outcome(
                response.status_code,
                payload.get("error_code"),
                _normalise(str(payload.get("message", "")), ctx),
                layer=payload.get("layer"),
            )
        # A plain-text (or HTML) MLflow error; the gateway wraps its text as JSON with the code the status implies.
        text = readable_error_text(response.content, response.headers.get("content-type"))
        return Outcome(
            response.status_code,
            error_code_for_status(response.status_code),
            _normalise(text or "MLflow refused.", ctx),
        )
    keys = tuple(sorted(payload)) if isinstance(payload, dict) else None
    observed = None
    if step.observe is not None:
        try:
            observed = step.observe(payload if payload is not None and keys is not None else response.text)
        except (KeyError, TypeError, IndexError) as exc:
            observed = f"<observe failed: {exc!r}>"
    return Outcome(response.status_code, keys=keys, observed=observed)


@dataclass
class Transcript:
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    ctx: dict[str, str] = field(default_factory=dict)


def run_sequence(client: httpx.Client, prefix: str, steps: list[Step]) -> Transcript:
    transcript = Transcript(ctx={"p": prefix, "trace": "tr-" + uuid.uuid4().hex, "trace0": "tr-" + uuid.uuid4().hex})
    ctx = transcript.ctx
    for step in steps:
        try:
            path = _fill(step.path, ctx)
            params = _fill(step.params, ctx)
            body = _fill(step.json, ctx)
        except MissingContext as exc:
            transcript.outcomes[step.id] = Outcome(0, message=f"missing context {exc}")
            continue
        kwargs: dict[str, Any] = {"params": params}
        if step.content is not None:
            kwargs["content"] = step.content
            if step.method != "PUT":
                kwargs["headers"] = {"Content-Type": "application/json"}
        elif step.json is not None:
            kwargs["content"] = json.dumps(body).encode()
            kwargs["headers"] = {"Content-Type": "application/json"}
        if step.content_type is not None:
            kwargs["headers"] = {"Content-Type": step.content_type}
        response = client.request(step.method, path, **kwargs)
        if response.status_code < 400 and step.capture is not None:
            ctx.update({key: str(value) for key, value in step.capture(response.json()).items()})
        transcript.outcomes[step.id] = _outcome(step, response, ctx)
    return transcript


# --- fixtures ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A stock `mlflow server`, no auth app, one worker, on a free loopback port; stopped after the module."""
    home = tmp_path_factory.mktemp("plain-mlflow")
    port = free_loopback_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HOKUSAI_"))}
    env.update(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true")
    command = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
        "--backend-store-uri", f"sqlite:///{home / 'plain.db'}", "--artifacts-destination", str(home / "art"),
        "--workers", "1",
    ]  # fmt: skip
    log_path = home / "plain.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=home,
            start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process, log_path)
        yield url
    finally:
        _stop_group(process)


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + PLAIN_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"plain mlflow server exited ({process.returncode}):\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/health", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    pytest.fail(f"plain mlflow server not healthy in {PLAIN_START_TIMEOUT:.0f} s:\n{log_path.read_text()[-3000:]}")


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    import signal

    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=15)
    # The CLI's uvicorn child is in the same session; make sure nothing of ours outlives the module.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=15)


@pytest.fixture(scope="module")
def fresh_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivePlatform]:
    """A platform of this module's own: the transcripts are compared id for id, and both servers must number their
    experiments and models alike (the session platform may hold other tests' already)."""
    live = start_platform(tmp_path_factory.mktemp("compat") / "data")
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="module")
def transcripts(plain_mlflow: str, fresh_platform: LivePlatform) -> tuple[Transcript, Transcript]:
    platform = fresh_platform
    steps = build_steps()
    owner = platform.unique_owner("compat")
    key = platform.create_key(owner, "read,write")
    with httpx.Client(base_url=plain_mlflow, timeout=REQUEST_TIMEOUT) as plain_client:
        plain = run_sequence(plain_client, owner, steps)
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=platform.tracking_uri, headers=headers, timeout=REQUEST_TIMEOUT) as gateway_client:
        gateway = run_sequence(gateway_client, owner, steps)
    return plain, gateway


def _differences(plain: Transcript, gateway: Transcript) -> dict[str, tuple[Outcome, Outcome]]:
    return {
        step_id: (outcome, gateway.outcomes[step_id])
        for step_id, outcome in plain.outcomes.items()
        if outcome != gateway.outcomes[step_id]
    }


# --- tests ---------------------------------------------------------------------------------------------------------


def test_sequence_is_large_and_well_formed() -> None:
    steps = build_steps()
    ids = [step.id for step in steps]
    assert len(ids) == len(set(ids)), "step ids must be unique"
    assert len(ids) >= 100
    assert set(KNOWN_DIFFERENCES) <= set(ids), "KNOWN_DIFFERENCES names steps that do not exist"


def test_plain_run_went_as_scripted(transcripts: tuple[Transcript, Transcript]) -> None:
    """Guards the comparison itself: the script really exercised the plain server (ids captured, objects made)."""
    plain, _ = transcripts
    assert {"exp", "exp2", "run", "run2", "run0", "lm", "assessment"} <= set(plain.ctx)
    assert not [step for step, outcome in plain.outcomes.items() if outcome.status == 0]
    statuses = [outcome.status for outcome in plain.outcomes.values()]
    assert sum(status == 200 for status in statuses) >= 80
    assert sum(400 <= status < 500 for status in statuses) >= 30
    faults = {step for step, outcome in plain.outcomes.items() if outcome.status >= 500}
    assert faults == set(PLAIN_MLFLOW_FAULTS), faults


def test_gateway_matches_plain_mlflow(transcripts: tuple[Transcript, Transcript]) -> None:
    plain, gateway = transcripts
    differences = _differences(plain, gateway)
    unexpected = {step: pair for step, pair in differences.items() if step not in KNOWN_DIFFERENCES}
    report = "\n".join(f"{step}:\n  plain:   {p}\n  gateway: {g}" for step, (p, g) in unexpected.items())
    assert not unexpected, f"{len(unexpected)} unexpected differences:\n{report}"
    stale = sorted(set(KNOWN_DIFFERENCES) - set(differences))
    assert not stale, f"listed in KNOWN_DIFFERENCES but no longer different: {stale}"


def test_gateway_permission_checks_never_turn_client_errors_into_403(
    transcripts: tuple[Transcript, Transcript],
) -> None:
    """Where MLflow answers 400/404, the gateway's own checks never answer 403 instead.

    The only such cases come from MLflow's auth app upstream (`layer` mlflow, listed with an "MLflow auth app"
    reason); the gateway's scope checks and allowlist never turn a client error into a permission error.
    """
    plain, gateway = transcripts
    converted = {
        step: (outcome.status, gateway.outcomes[step].status)
        for step, outcome in plain.outcomes.items()
        if outcome.status in (400, 404) and gateway.outcomes[step].status == 403
    }
    not_upstream = {step for step in converted if not KNOWN_DIFFERENCES.get(step, "").startswith("MLflow auth app")}
    assert not not_upstream, f"400/404 turned into 403 by the gateway: {sorted(not_upstream)}"
    assert all(gateway.outcomes[step].layer == "mlflow" for step in converted), converted


def test_mlflow_html_error_pages_arrive_as_plain_text(transcripts: tuple[Transcript, Transcript]) -> None:
    """MLflow answers an unknown endpoint with Werkzeug's HTML page; the client must not print its markup."""
    _plain, gateway = transcripts
    outcome = gateway.outcomes["unknown-endpoint"]
    assert (outcome.status, outcome.error_code, outcome.layer) == (404, "ENDPOINT_NOT_FOUND", "mlflow")
    assert outcome.message is not None
    assert outcome.message.startswith("404 Not Found: The requested URL was not found on the server.")
    assert "<" not in outcome.message
