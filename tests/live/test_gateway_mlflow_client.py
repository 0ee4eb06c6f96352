"""The stock MLflow client through the gateway, configured only by environment variables, plus isolation between users.

Each client scenario runs in a fresh interpreter (`platform.run_python`) and prints one JSON summary line that the
test asserts on; REST checks use httpx against the gateway with the user's key.
"""

from __future__ import annotations

import json
import socket
import textwrap
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.support.platform import LivePlatform
from tests.support.raw_http import raw_request
from tests.support.stock_client import CLIENT_TIMEOUT, FULL_WORKFLOW, client_summary

pytestmark = pytest.mark.live

API = "/api/mlflow/api/2.0/mlflow"
ARTIFACTS = "/api/mlflow/api/2.0/mlflow-artifacts/artifacts"
TRACES = "/api/mlflow/api/3.0/mlflow/traces"
REVOCATION_POLL_SECONDS = 5.0

# No experiment set anywhere: every call below names MLflow's Default experiment (0).
BARE_CLIENT = textwrap.dedent(
    """
    import json
    import mlflow

    with mlflow.start_run() as run:
        mlflow.log_metric("m", 1.0)
    experiment = mlflow.get_experiment(run.info.experiment_id)

    @mlflow.trace(name="bare-span")
    def traced(x):
        return x + 1

    traced(1)
    mlflow.flush_trace_async_logging()
    trace = mlflow.get_trace(mlflow.get_last_active_trace_id())
    dataset = mlflow.genai.datasets.create_dataset(name="bare-dataset-" + run.info.run_id)
    print("SUMMARY " + json.dumps({
        "run_id": run.info.run_id,
        "user_id": run.info.user_id,
        "experiment_id": run.info.experiment_id,
        "experiment_name": experiment.name,
        "trace_id": trace.info.trace_id,
        "trace_experiment_id": trace.info.experiment_id,
        "trace_span_names": [span.name for span in trace.data.spans],
        "dataset_experiment_ids": dataset.experiment_ids,
        "searched_run_ids": [r.info.run_id for r in mlflow.search_runs(output_format="list")],
        "searched_trace_ids": [t.info.trace_id for t in mlflow.search_traces(return_type="list")],
        # The bare client's active experiment is 0: its trace deletions name it.
        "deleted": mlflow.MlflowClient().delete_traces(experiment_id="0", trace_ids=[trace.info.trace_id]),
        "searched_after_delete": [t.info.trace_id for t in mlflow.search_traces(return_type="list")],
    }), flush=True)
    """
)

# The prompt registry (prompts are registered models underneath): run by the owner, then by another user.
PROMPTS = textwrap.dedent(
    """
    import json, sys
    import mlflow

    name, role = sys.argv[1], sys.argv[2]
    out = {}

    def attempt(label, call):
        try:
            out[label] = call()
        except mlflow.exceptions.MlflowException as exc:
            out[label] = {"error_code": exc.error_code, "message": exc.message}

    if role == "owner":
        mlflow.genai.register_prompt(name=name, template="Hello {{person}}", commit_message="first")
        mlflow.genai.register_prompt(name=name, template="Hi {{person}}")
        mlflow.genai.set_prompt_alias(name, alias="production", version=2)
    attempt("v1", lambda: mlflow.genai.load_prompt("prompts:/" + name + "/1").format(person="Ada"))
    attempt("production", lambda: mlflow.genai.load_prompt("prompts:/" + name + "@production").template)
    attempt("searched", lambda: [p.name for p in mlflow.genai.search_prompts(filter_string="name = '" + name + "'")])
    if role == "other":
        attempt("new_version", lambda: mlflow.genai.register_prompt(name=name, template="pwned").version)
        attempt("alias", lambda: mlflow.genai.set_prompt_alias(name, alias="production", version=1))
    print("SUMMARY " + json.dumps(out), flush=True)
    """
)


def _assert_refused_by_mlflow(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text
    body = response.json()
    assert body["error_code"] == "PERMISSION_DENIED"
    assert body["layer"] == "mlflow"


@pytest.mark.parametrize("credential", ["bearer", "basic"])
def test_full_workflow_with_the_stock_client(platform: LivePlatform, credential: str) -> None:
    owner = platform.unique_owner(f"client-{credential}-")
    key = platform.create_key(owner, "read,write")
    stem = owner.replace("-", "")
    env = platform.mlflow_env(key, basic=credential == "basic")
    result = platform.run_python(FULL_WORKFLOW.replace("sys.argv[1]", repr(stem)), env, timeout=CLIENT_TIMEOUT)
    summary = client_summary(result)

    assert summary["user_id"] == owner
    assert summary["version"] == "1"
    assert summary["prediction"] == summary["expected"]
    assert summary["artifact_text"] == f"hello artifact {stem}"
    assert summary["searched_run_ids"] == [summary["run_id"]]
    assert summary["params"] == {"alpha": "0.1", "solver": "lsq"}
    assert summary["loss_history"] == pytest.approx([1.0, 0.5, 1 / 3])
    assert summary["traced"] == 42
    assert summary["trace_span_names"] == [f"{stem}-span"]
    with platform.client(key) as client:
        experiment = client.get(API + "/experiments/get", params={"experiment_id": summary["experiment_id"]})
    assert experiment.status_code == 200
    assert experiment.json()["experiment"]["name"] == f"{stem}-exp"


def test_a_bare_client_works_in_the_owners_default_experiment(platform: LivePlatform) -> None:
    owner = platform.unique_owner("fresh-")
    key = platform.create_key(owner, "read,write")
    summary = client_summary(platform.run_python(BARE_CLIENT, platform.mlflow_env(key), timeout=CLIENT_TIMEOUT))
    assert summary["user_id"] == owner
    assert summary["experiment_id"] != "0"
    assert summary["experiment_name"] == f"Default ({owner})"
    # A bare trace and evaluation dataset follow the run; bare searches (of experiment 0) find what was made.
    assert summary["trace_experiment_id"] == summary["experiment_id"]
    assert summary["trace_span_names"] == ["bare-span"]
    assert summary["dataset_experiment_ids"] == [summary["experiment_id"]]
    # (Experiment 0 itself may hold runs an admin made, so membership is what is checked.)
    assert summary["run_id"] in summary["searched_run_ids"]
    assert summary["trace_id"] in summary["searched_trace_ids"]
    assert summary["deleted"] == 1 and summary["trace_id"] not in summary["searched_after_delete"]

    intruder_owner = platform.unique_owner("intruder-")
    intruder = platform.create_key(intruder_owner, "read,write")
    with platform.client(intruder) as client:
        _assert_refused_by_mlflow(
            client.post(API + "/runs/create", json={"experiment_id": summary["experiment_id"], "start_time": 1})
        )
        _assert_refused_by_mlflow(
            client.post(
                API + "/runs/log-metric",
                json={"run_id": summary["run_id"], "key": "m", "value": 2.0, "timestamp": 1},
            )
        )
        refused = client.post(
            API + "/runs/log-metric", json={"run_id": summary["run_id"], "key": "m", "value": 3.0, "timestamp": 1}
        )
        # Their own bare run goes to their own default experiment, never the first user's, and their search of
        # experiment 0 shows only their own.
        own = client.post(API + "/runs/create", json={"experiment_id": "0", "start_time": 1})
        searched = client.post(API + "/runs/search", json={"experiment_ids": ["0"]})
    assert own.status_code == 200, own.text
    assert own.json()["run"]["info"]["experiment_id"] not in ("0", summary["experiment_id"])
    searched_ids = [run["info"]["run_id"] for run in searched.json()["runs"]]
    assert own.json()["run"]["info"]["run_id"] in searched_ids
    assert summary["run_id"] not in searched_ids
    # MLflow's bare refusal is explained: who was refused, and what to do.
    assert refused.json()["message"].startswith(f"Permission denied: MLflow refused this to user '{intruder_owner}'.")
    assert refused.json()["message"].endswith("or use an experiment of your own.")


# Scorers with no experiment set: registered in the owner's default experiment, and found there again.
BARE_SCORERS = textwrap.dedent(
    """
    import json, sys
    from mlflow.genai.scorers import RelevanceToQuery, delete_scorer, get_scorer, list_scorers

    name = sys.argv[1] if len(sys.argv) > 1 else "bare-scorer"
    RelevanceToQuery(model="openai:/gpt-4o-mini").register(name=name)
    out = {"listed": [scorer.name for scorer in list_scorers()], "got": get_scorer(name=name).name}
    delete_scorer(name=name, version="all")
    out["listed_after_delete"] = [scorer.name for scorer in list_scorers()]
    print("SUMMARY " + json.dumps(out), flush=True)
    """
)


def test_bare_scorers_are_listed_read_and_deleted_where_they_were_registered(platform: LivePlatform) -> None:
    key = platform.create_key(platform.unique_owner("scorer-"), "read,write")
    summary = client_summary(platform.run_python(BARE_SCORERS, platform.mlflow_env(key), timeout=CLIENT_TIMEOUT))
    assert summary == {"listed": ["bare-scorer"], "got": "bare-scorer", "listed_after_delete": []}


# A prompt used with no experiment set: the client links it to its current experiment by a tag, in a thread.
BARE_PROMPT = textwrap.dedent(
    """
    import json, threading, time
    import mlflow

    with mlflow.start_run() as run:
        pass
    mlflow.genai.register_prompt(name="bare-prompt", template="Hi {{name}}")
    for thread in threading.enumerate():
        if thread.name.startswith("link_prompt_to_experiment_thread"):
            thread.join(30)
    found = mlflow.genai.search_prompts(filter_string="experiment_id = '" + run.info.experiment_id + "'")
    tags = mlflow.MlflowClient().get_prompt("bare-prompt").tags
    print("SUMMARY " + json.dumps({
        "experiment_id": run.info.experiment_id,
        "found": [prompt.name for prompt in found],
        "linked": tags.get("_mlflow_experiment_ids"),
    }), flush=True)
    """
)


def test_a_bare_prompt_is_linked_to_the_owners_default_experiment(platform: LivePlatform) -> None:
    key = platform.create_key(platform.unique_owner("prompt-"), "read,write")
    summary = client_summary(platform.run_python(BARE_PROMPT, platform.mlflow_env(key), timeout=CLIENT_TIMEOUT))
    assert summary["experiment_id"] != "0"
    assert summary["linked"] == f",{summary['experiment_id']},"
    assert summary["found"] == ["bare-prompt"]


def test_prompts_work_and_only_their_owner_changes_them(platform: LivePlatform) -> None:
    owner, other = platform.unique_owner("prompter-"), platform.unique_owner("reader-")
    name = owner.replace("-", "") + "-greeting"

    def run_as(user: str, role: str) -> dict[str, Any]:
        env = platform.mlflow_env(platform.create_key(user, "read,write"))
        code = PROMPTS.replace("sys.argv[1], sys.argv[2]", f"{name!r}, {role!r}")
        return client_summary(platform.run_python(code, env, timeout=CLIENT_TIMEOUT))

    mine, theirs = run_as(owner, "owner"), run_as(other, "other")

    for seen in (mine, theirs):
        assert (seen["v1"], seen["production"], seen["searched"]) == ("Hello Ada", "Hi {{person}}", [name])
    for attempt in ("new_version", "alias"):
        assert theirs[attempt]["error_code"] == "PERMISSION_DENIED", theirs[attempt]
        assert f"Permission denied: MLflow refused this to user '{other}'." in theirs[attempt]["message"]
        # Prompts are registered models: the way into another user's is a name that was taken.
        assert theirs[attempt]["message"].endswith("or use a model or prompt name of your own.")


def test_a_users_first_calls_at_once_share_one_default_experiment(platform: LivePlatform) -> None:
    """A bare trace sends its start and its spans together; both must land in the one default experiment."""
    owner = platform.unique_owner("burst-")
    key = platform.create_key(owner, "read,write")

    def create_run(_: int) -> str:
        with platform.client(key) as client:
            response = client.post(API + "/runs/create", json={"experiment_id": "0", "start_time": 1})
        assert response.status_code == 200, response.text
        return str(response.json()["run"]["info"]["experiment_id"])

    with ThreadPoolExecutor(max_workers=6) as pool:
        experiment_ids = set(pool.map(create_run, range(6)))
    assert len(experiment_ids) == 1
    with platform.client(key) as client:
        found = client.post(
            API + "/experiments/search", json={"filter": f"name LIKE 'Default ({owner})%'", "max_results": 10}
        )
    assert [e["experiment_id"] for e in found.json()["experiments"]] == list(experiment_ids)


def test_another_user_cannot_take_the_names_of_someones_default_experiment(platform: LivePlatform) -> None:
    """Names are shared: another user may take `Default (<owner>)` and its obvious variants before the first run."""
    owner = platform.unique_owner("squatted-")
    key = platform.create_key(owner, "read,write")
    with platform.client(platform.create_key(platform.unique_owner("squatter-"), "read,write")) as squatter:
        for name in [f"Default ({owner})", *(f"Default ({owner}) {number}" for number in range(2, 10))]:
            assert squatter.post(API + "/experiments/create", json={"name": name}).status_code == 200

    with platform.client(key) as client:
        created = client.post(API + "/runs/create", json={"experiment_id": "0", "start_time": 1})
        assert created.status_code == 200, created.text
        experiment_id = created.json()["run"]["info"]["experiment_id"]
        experiment = client.get(API + "/experiments/get", params={"experiment_id": experiment_id}).json()
        grants = client.get("/api/mlflow/api/3.0/mlflow/users/current/permissions").json()["permissions"]

    assert experiment["experiment"]["name"].startswith(f"Default ({owner}) ")
    assert ("experiment", experiment_id, "MANAGE") in [
        (grant["resource_type"], grant["resource_pattern"], grant["permission"]) for grant in grants
    ]


@pytest.mark.parametrize("prefix", ["/api/mlflow/api", "/api/mlflow/ajax-api"])
def test_a_user_reads_their_own_identity_and_grants_as_the_web_ui_does(platform: LivePlatform, prefix: str) -> None:
    owner = platform.unique_owner("self-")
    key = platform.create_key(owner, "read")
    with platform.client(platform.create_key(owner, "read,write")) as writer:
        created = writer.post(API + "/experiments/create", json={"name": f"{owner}-own"})
    with platform.client(key) as client:
        current = client.get(prefix + "/2.0/mlflow/users/current")
        grants = client.get(prefix + "/3.0/mlflow/users/current/permissions")
        others = client.get(prefix + "/2.0/mlflow/users/permissions/list", params={"username": "admin"})

    assert current.status_code == 200 and current.json()["user"]["username"] == owner, current.text
    assert grants.status_code == 200, grants.text
    experiment_id = created.json()["experiment_id"]
    own_grants = grants.json()["permissions"]
    assert [(grant["resource_type"], grant["resource_pattern"], grant["permission"]) for grant in own_grants] == [
        ("experiment", experiment_id, "MANAGE")
    ]
    assert grants.json()["is_admin"] is False
    assert others.status_code == 403  # anyone else's grants stay admin-only


def test_webhooks_are_refused_to_users_with_the_reason(platform: LivePlatform) -> None:
    owner = platform.unique_owner("hook-")
    key = platform.create_key(owner, "read,write")
    hook = {
        "name": "h",
        "url": "https://example.invalid/hook",
        "events": [{"entity": "model_version", "action": "created"}],
    }
    with platform.client(key) as client:
        refused = client.post(API + "/webhooks", json=hook)
    _assert_refused_by_mlflow(refused)
    assert refused.json()["message"] == (
        f"Permission denied: MLflow refused this to user '{owner}'. Model-registry webhooks are for MLflow admins: "
        "use a Hokusai key with the 'admin' scope."
    )


def test_request_without_a_key_is_refused(platform: LivePlatform) -> None:
    with platform.client() as anonymous:
        response = anonymous.post(API + "/experiments/search", json={"max_results": 1})
    assert response.status_code == 401
    assert response.json()["error_code"] == "UNAUTHENTICATED"
    assert response.json()["layer"] == "hokusai-api"
    # One challenge per line: a browser shows its login box only for a Basic challenge it can find on its own line.
    assert response.headers.get_list("www-authenticate") == ["Bearer", 'Basic realm="hokusai"']


STALE_BASIC_CREDENTIALS = textwrap.dedent(
    """
    import json
    import mlflow

    try:
        mlflow.search_experiments(max_results=1)
        print("SUMMARY " + json.dumps({"error": None}), flush=True)
    except mlflow.exceptions.MlflowException as exc:
        print("SUMMARY " + json.dumps({"error": str(exc)}), flush=True)
    """
)


def test_a_stale_mlflow_password_beside_a_valid_token_is_named_as_the_problem(platform: LivePlatform) -> None:
    # The stock client sends USERNAME/PASSWORD rather than the token when both are set: the answer must say so.
    env = platform.mlflow_env(platform.create_key(platform.unique_owner("stale-"), "read"))
    env.update(MLFLOW_TRACKING_USERNAME="alice", MLFLOW_TRACKING_PASSWORD="old-mlflow-password")
    error = client_summary(platform.run_python(STALE_BASIC_CREDENTIALS, env, timeout=CLIENT_TIMEOUT))["error"]
    assert error is not None
    assert "The HTTP Basic password is not a Hokusai key" in error
    assert "MLFLOW_TRACKING_PASSWORD" in error
    assert "old-mlflow-password" not in error

    # A stale password shaped like a key (an old or another platform's key) is named as the password too.
    env["MLFLOW_TRACKING_PASSWORD"] = "hk_live_" + "A" * 40
    error = client_summary(platform.run_python(STALE_BASIC_CREDENTIALS, env, timeout=CLIENT_TIMEOUT))["error"]
    assert error is not None and "The API key sent as the HTTP Basic password is not known" in error

    del env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]
    assert client_summary(platform.run_python(STALE_BASIC_CREDENTIALS, env, timeout=CLIENT_TIMEOUT))["error"] is None


def test_revoked_key_is_refused_within_the_cache_ttl(platform: LivePlatform) -> None:
    with platform.client(platform.admin_key) as admin:
        created = admin.post("/api/v1/keys", json={"owner": platform.unique_owner("revoked-"), "scopes": ["read"]})
        assert created.status_code == 201, created.text
        key, key_id = created.json()["key"], created.json()["id"]
        with platform.client(key) as user:
            assert user.post(API + "/experiments/search", json={"max_results": 1}).status_code == 200
            assert admin.delete(f"/api/v1/keys/{key_id}").status_code == 200
            revoked_at = time.monotonic()
            statuses = []
            while time.monotonic() - revoked_at < REVOCATION_POLL_SECONDS:
                response = user.post(API + "/experiments/search", json={"max_results": 1})
                statuses.append(response.status_code)
                if response.status_code == 401:
                    break
                time.sleep(0.2)
    assert statuses[-1] == 401, statuses
    assert response.json()["error_code"] == "UNAUTHENTICATED"
    assert "revoked" in response.json()["message"]


@pytest.fixture(scope="module")
def owner_resources(platform: LivePlatform) -> dict[str, str]:
    """User A's experiment, run, registered model (with a version) and a logged model, made over REST."""
    owner = platform.unique_owner("owner-a-")
    key = platform.create_key(owner, "read,write")
    with platform.client(key) as client:
        experiment = client.post(API + "/experiments/create", json={"name": f"{owner}-exp"}).json()["experiment_id"]
        run = client.post(API + "/runs/create", json={"experiment_id": experiment, "start_time": 1}).json()
        run_id = run["run"]["info"]["run_id"]
        put = client.put(f"{ARTIFACTS}/{experiment}/{run_id}/artifacts/model/data.txt", content=b"weights")
        assert put.status_code == 200, put.text
        model = f"{owner}-model"
        assert client.post(API + "/registered-models/create", json={"name": model}).status_code == 200
        version = client.post(
            API + "/model-versions/create",
            json={
                "name": model,
                "source": f"mlflow-artifacts:/{experiment}/{run_id}/artifacts/model",
                "run_id": run_id,
            },
        )
        assert version.status_code == 200, version.text
        logged = client.post(API + "/logged-models", json={"experiment_id": experiment, "name": "lm"})
        assert logged.status_code == 200, logged.text
        trace_id = "tr-" + uuid.uuid4().hex
        location = {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment}}
        trace = {
            "trace_id": trace_id,
            "trace_location": location,
            "request_time": "2024-01-01T00:00:00Z",
            "state": "OK",
        }
        started = client.post(TRACES, json={"trace": {"trace_info": trace}})
        assert started.status_code == 200, started.text
    return {
        "owner": owner,
        "key": key,
        "experiment": experiment,
        "run": run_id,
        "model": model,
        "logged_model": logged.json()["model"]["info"]["model_id"],
        "trace": trace_id,
    }


def _cross_user_attempts(a: dict[str, str]) -> list[tuple[str, str, dict[str, object]]]:
    experiment, run, model = a["experiment"], a["run"], a["model"]
    return [
        ("PATCH", API + "/registered-models/update", {"json": {"name": model, "description": "mine now"}}),
        ("POST", API + "/registered-models/rename", {"json": {"name": model, "new_name": model + "-stolen"}}),
        ("POST", API + "/registered-models/set-tag", {"json": {"name": model, "key": "k", "value": "v"}}),
        ("DELETE", API + "/registered-models/delete", {"json": {"name": model}}),
        (
            "POST",
            API + "/model-versions/create",
            {"json": {"name": model, "source": f"mlflow-artifacts:/{experiment}/{run}/artifacts/model"}},
        ),
        ("DELETE", API + "/model-versions/delete", {"json": {"name": model, "version": "1"}}),
        ("POST", API + "/registered-models/alias", {"json": {"name": model, "alias": "prod", "version": "1"}}),
        ("POST", API + "/experiments/delete", {"json": {"experiment_id": experiment}}),
        ("POST", API + "/experiments/update", {"json": {"experiment_id": experiment, "new_name": "stolen"}}),
        (
            "POST",
            API + "/experiments/set-experiment-tag",
            {"json": {"experiment_id": experiment, "key": "k", "value": "v"}},
        ),
        ("POST", API + "/runs/log-metric", {"json": {"run_id": run, "key": "m", "value": 1.0, "timestamp": 1}}),
        ("POST", API + "/runs/log-parameter", {"json": {"run_id": run, "key": "p", "value": "1"}}),
        ("POST", API + "/runs/set-tag", {"json": {"run_id": run, "key": "k", "value": "v"}}),
        ("POST", API + "/runs/delete", {"json": {"run_id": run}}),
        ("PUT", f"{ARTIFACTS}/{experiment}/{run}/artifacts/injected.txt", {"content": b"not yours"}),
        (
            "PUT",
            f"/api/mlflow/ajax-api/2.0/mlflow-artifacts/artifacts/{experiment}/{run}/artifacts/x.txt",
            {"content": b"x"},
        ),
        ("DELETE", f"{ARTIFACTS}/{experiment}/{run}/artifacts/model/data.txt", {}),
        ("DELETE", API + "/logged-models/" + a["logged_model"], {}),
        ("POST", "/api/mlflow/api/3.0/mlflow/users/permissions/grant", {"json": {}}),
    ]


def test_another_user_cannot_modify_owners_resources(platform: LivePlatform, owner_resources: dict[str, str]) -> None:
    intruder = platform.create_key(platform.unique_owner("user-b-"), "read,write")
    refused = {}
    with platform.client(intruder) as client:
        for method, path, kwargs in _cross_user_attempts(owner_resources):
            response = client.request(method, path, **kwargs)  # type: ignore[arg-type]
            refused[f"{method} {path}"] = (response.status_code, response.json().get("layer"))
        # Reading is allowed (MLflow's default permission is READ) and shows nothing was changed.
        model = client.get(API + "/registered-models/get", params={"name": owner_resources["model"]})
        run = client.get(API + "/runs/get", params={"run_id": owner_resources["run"]})
        artifact = client.get(
            f"{ARTIFACTS}/{owner_resources['experiment']}/{owner_resources['run']}/artifacts/model/data.txt"
        )
    # Everything is a 403; all but the admin-only grant come from MLflow's own permission checks.
    grant = "POST /api/mlflow/api/3.0/mlflow/users/permissions/grant"
    assert refused.pop(grant) == (403, "hokusai-api")
    assert refused == dict.fromkeys(refused, (403, "mlflow")), refused
    assert model.status_code == 200 and model.json()["registered_model"].get("description", "") == ""
    assert len(model.json()["registered_model"]["latest_versions"]) == 1
    assert run.json()["run"]["info"]["lifecycle_stage"] == "active"
    assert run.json()["run"]["data"].get("metrics", []) == []
    assert artifact.content == b"weights"


def _otlp_export(trace_id: str) -> bytes:
    """One OTLP/JSON span of the MLflow trace `trace_id` (`tr-` + the OTel trace id in hex)."""
    span = {
        "traceId": trace_id.removeprefix("tr-"),
        "spanId": uuid.uuid4().hex[:16],
        "name": "injected",
        "startTimeUnixNano": "1700000000000000000",
        "endTimeUnixNano": "1700000001000000000",
    }
    return json.dumps({"resourceSpans": [{"resource": {}, "scopeSpans": [{"spans": [span]}]}]}).encode()


def _start_trace(client: httpx.Client, trace_id: str, experiment: str, **fields: object) -> httpx.Response:
    location = {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment}}
    trace = {"trace_id": trace_id, "trace_location": location, "request_time": "2024-01-01T00:00:00Z", **fields}
    return client.post(TRACES, json={"trace": {"trace_info": trace}})


def test_another_users_run_or_trace_cannot_be_reached_by_a_second_spelling_or_a_reused_id(
    platform: LivePlatform,
) -> None:
    """MLflow's auth app authorised these on the caller's own run or experiment while the handler wrote to the
    owner's (a security review, 2026-11-27); `hokusai.mlflow_auth` refuses them before anything is written."""
    owner_key = platform.create_key(platform.unique_owner("spelled-a-"), "read,write")
    intruder_key = platform.create_key(platform.unique_owner("spelled-b-"), "read,write")
    with platform.client(owner_key) as owner, platform.client(intruder_key) as intruder:
        experiment = owner.post(API + "/experiments/create", json={"name": platform.unique_owner("spelled-")})
        experiment_id = experiment.json()["experiment_id"]
        run_id = owner.post(API + "/runs/create", json={"experiment_id": experiment_id}).json()["run"]["info"]["run_id"]
        trace_id = "tr-" + uuid.uuid4().hex
        assert _start_trace(owner, trace_id, experiment_id, state="OK").status_code == 200
        own_run = intruder.post(API + "/runs/create", json={"experiment_id": "0"}).json()["run"]["info"]
        before = {
            "run": owner.get(API + "/runs/get", params={"run_id": run_id}).json(),
            "trace": owner.get(f"{TRACES}/{trace_id}").json(),
        }

        spelled = {
            path: intruder.post(API + path, json={"run_uuid": own_run["run_id"], "runId": run_id, **body})
            for path, body in [
                ("/runs/update", {"status": "KILLED", "run_name": "renamed"}),
                ("/runs/set-tag", {"key": "k", "value": "v"}),
                ("/runs/log-batch", {"metrics": [{"key": "m", "value": 1, "timestamp": 1, "step": 0}]}),
                ("/runs/delete", {}),
            ]
        }
        upload = intruder.post(
            "/api/mlflow/ajax-api/2.0/mlflow/upload-artifact",
            params={"run_id": own_run["run_id"], "run_uuid": run_id, "path": "planted.txt"},
            content=b"not yours",
        )
        retraced = _start_trace(intruder, trace_id, own_run["experiment_id"], state="ERROR")
        otlp = {"content-type": "application/json", "x-mlflow-experiment-id": own_run["experiment_id"]}
        spans_into_trace = intruder.post("/api/mlflow/v1/traces", content=_otlp_export(trace_id), headers=otlp)
        new_trace = "tr-" + uuid.uuid4().hex
        linked_to_run = intruder.post(
            "/api/mlflow/v1/traces", content=_otlp_export(new_trace), headers={**otlp, "x-mlflow-run-id": run_id}
        )
        own_spans = intruder.post("/api/mlflow/v1/traces", content=_otlp_export(new_trace), headers=otlp)
        owner_resends = _start_trace(owner, trace_id, experiment_id, state="OK")
        after = {
            "run": owner.get(API + "/runs/get", params={"run_id": run_id}).json(),
            "trace": owner.get(f"{TRACES}/{trace_id}").json(),
        }
        artifacts = owner.get(API + "/artifacts/list", params={"run_id": run_id}).json()

    for path, response in spelled.items():
        assert response.status_code == 400, (path, response.text)
        assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE"
        assert response.json()["message"].startswith("Conflicting values for parameter 'run_id': "), path
    assert (upload.status_code, upload.json()["error_code"]) == (400, "INVALID_PARAMETER_VALUE"), upload.text
    assert (retraced.status_code, retraced.json()["layer"]) == (403, "mlflow"), retraced.text
    assert (spans_into_trace.status_code, spans_into_trace.json()["layer"]) == (403, "mlflow")
    assert (linked_to_run.status_code, linked_to_run.json()["layer"]) == (403, "mlflow")
    # What MLflow's checks exist for still works: new traces of one's own, and the owner re-sending their trace.
    assert own_spans.status_code == 200, own_spans.text
    assert owner_resends.status_code == 200, owner_resends.text
    assert after == before
    assert artifacts.get("files", []) == []


def test_another_users_model_assessment_or_experiment_cannot_be_reached_by_a_second_reading(
    platform: LivePlatform,
) -> None:
    """The later reviews' cases: a DELETE's query against its unlabelled JSON body, an assessment id carried by a
    re-sent trace, a double-encoded body against the query, a path against the body (labelled JSON or not): each was
    authorised on one and acted on the other. An assessment created again with an existing id was MLflow's 500."""
    owner_key = platform.create_key(platform.unique_owner("read2-a-"), "read,write")
    intruder_key = platform.create_key(platform.unique_owner("read2-b-"), "read,write")
    with (
        platform.client(owner_key) as owner,
        platform.client(intruder_key) as intruder,
        platform.client(platform.admin_key) as admin,
    ):
        experiment_id = owner.post(API + "/experiments/create", json={"name": platform.unique_owner("read2-")}).json()[
            "experiment_id"
        ]
        model = platform.unique_owner("read2-model-")
        assert owner.post(API + "/registered-models/create", json={"name": model}).status_code == 200
        trace_id = "tr-" + uuid.uuid4().hex
        assert _start_trace(owner, trace_id, experiment_id, state="OK").status_code == 200
        feedback = {
            "trace_id": trace_id,
            "assessment_name": "quality",
            "source": {"source_type": "HUMAN", "source_id": "owner"},
            "feedback": {"value": "good"},
        }
        logged = owner.post(f"{TRACES}/{trace_id}/assessments", json={"assessment": feedback})
        assert logged.status_code == 200, logged.text
        assessment_id = logged.json()["assessment"]["assessment_id"]
        logged_model = owner.post(API + "/logged-models", json={"experiment_id": experiment_id, "name": "lm"})
        model_id = logged_model.json()["model"]["info"]["model_id"]

        own_experiment = intruder.post(API + "/experiments/create", json={"name": platform.unique_owner("read2-")})
        own_experiment_id = own_experiment.json()["experiment_id"]
        own_model = platform.unique_owner("read2-own-")
        assert intruder.post(API + "/registered-models/create", json={"name": own_model}).status_code == 200
        own_trace = "tr-" + uuid.uuid4().hex
        assert _start_trace(intruder, own_trace, own_experiment_id, state="OK").status_code == 200
        own_logged = intruder.post(API + "/logged-models", json={"experiment_id": own_experiment_id, "name": "lm"})
        own_model_id = own_logged.json()["model"]["info"]["model_id"]

        deleted = intruder.request(
            "DELETE",
            API + "/registered-models/delete",
            params={"name": own_model},
            content=json.dumps({"name": model}),
            headers={"Content-Type": "text/plain"},
        )
        taken = {**feedback, "trace_id": own_trace, "assessment_id": assessment_id, "feedback": {"value": "bad"}}
        resent = _start_trace(intruder, own_trace, own_experiment_id, state="OK", assessments=[taken])
        created_again = [
            client.post(f"{TRACES}/{trace}/assessments", json={"assessment": {**taken, "trace_id": trace}})
            for client, trace in ((intruder, own_trace), (owner, trace_id), (admin, trace_id))
        ]
        planted = intruder.post(
            "/api/mlflow/api/3.0/mlflow/datasets/create",
            params={"experiment_ids": own_experiment_id},
            content=json.dumps(json.dumps({"name": "planted", "experiment_ids": [experiment_id]})),
            headers={"Content-Type": "application/json"},
        )
        finalized = intruder.patch(
            f"{API}/logged-models/{own_model_id}", json={"model_id": model_id, "status": "LOGGED_MODEL_UPLOAD_FAILED"}
        )
        finalized_unlabelled = intruder.patch(
            f"/api/mlflow/ajax-api/2.0/mlflow/logged-models/{own_model_id}",
            content=json.dumps({"model_id": model_id, "status": "LOGGED_MODEL_READY"}),
            headers={"Content-Type": "text/plain"},
        )
        # The same calls naming one resource in both places, as hand-written clients (`curl -X PATCH -d …`) send them.
        own_finalized = intruder.patch(
            f"{API}/logged-models/{own_model_id}",
            content=json.dumps({"model_id": own_model_id, "status": "LOGGED_MODEL_READY"}),
            headers={"Content-Type": "text/plain"},
        )
        own_deleted = intruder.request(
            "DELETE",
            API + "/registered-models/delete",
            params={"name": own_model},
            content=json.dumps({"name": own_model}),
            headers={"Content-Type": "text/plain"},
        )
        own_model_after = intruder.get(API + "/registered-models/get", params={"name": own_model})
        model_after = owner.get(API + "/registered-models/get", params={"name": model})
        logged_model_after = owner.get(f"{API}/logged-models/{model_id}")
        assessment_after = owner.get(f"{TRACES}/{trace_id}/assessments/{assessment_id}")
        datasets = owner.post(
            "/api/mlflow/api/3.0/mlflow/datasets/search", json={"experiment_ids": [experiment_id]}
        ).json()

    assert (deleted.status_code, deleted.json()["error_code"]) == (400, "INVALID_PARAMETER_VALUE"), deleted.text
    assert "'name' in the query, 'name' in the body name different resources" in deleted.json()["message"]
    assert (resent.status_code, resent.json()["layer"]) == (403, "mlflow"), resent.text
    # MLflow's store failed on the id with a 500: the owner's own retry too, and an admin's (MLflow checks no admin)
    for answer in created_again:
        assert (answer.status_code, answer.json()["error_code"]) == (400, "RESOURCE_ALREADY_EXISTS"), answer.text
        assert answer.json()["message"] == f"Assessment with ID '{assessment_id}' already exists."
    assert (planted.status_code, planted.json()["layer"]) == (403, "mlflow"), planted.text
    assert (finalized.status_code, finalized.json()["error_code"]) == (400, "INVALID_PARAMETER_VALUE"), finalized.text
    assert "'model_id' in the path, 'model_id' in the body name different resources" in finalized.json()["message"]
    assert (finalized_unlabelled.status_code, finalized_unlabelled.json()["error_code"]) == (
        400,
        "INVALID_PARAMETER_VALUE",
    ), finalized_unlabelled.text
    assert (
        "'model_id' in the path, 'model_id' in the body name different resources"
        in (finalized_unlabelled.json()["message"])
    )
    assert own_finalized.status_code == 200, own_finalized.text
    assert own_finalized.json()["model"]["info"]["status"] == "LOGGED_MODEL_READY"
    assert own_deleted.status_code == 200, own_deleted.text
    assert own_model_after.status_code == 404
    assert logged_model_after.json()["model"]["info"]["status"] == "LOGGED_MODEL_PENDING"
    assert model_after.status_code == 200
    assert assessment_after.status_code == 200, assessment_after.text
    assert assessment_after.json()["assessment"]["feedback"]["value"] == "good"
    assert datasets.get("datasets", []) == []


def test_a_page_on_another_local_port_cannot_use_mlflow_with_the_users_credentials(platform: LivePlatform) -> None:
    """Only the API's own pages (its UI) may write or read with a browser's credentials, on any of its host names."""
    key = platform.create_key(platform.unique_owner("origin-"), "read,write")
    name = {"name": platform.unique_owner("origin-exp-")}
    with platform.client(key) as client:
        elsewhere = client.post(API + "/experiments/create", json=name, headers={"Origin": "http://localhost:9"})
        own_ui = client.post(API + "/experiments/create", json=name, headers={"Origin": platform.url})
        by_name = f"http://localhost:{platform.port}"
        read = client.get(API + "/experiments/get-by-name", params={"experiment_name": name["name"]})
        own_ui_by_name = client.post(
            API + "/experiments/set-experiment-tag",
            json={"experiment_id": read.json()["experiment"]["experiment_id"], "key": "k", "value": "v"},
            headers={"Origin": by_name},
        )
        # A page's script could read what MLflow answers a cross-origin read: MLflow allows any localhost origin,
        # with the browser's credentials.
        read_elsewhere = client.get(
            API + "/experiments/get-by-name",
            params={"experiment_name": name["name"]},
            headers={"Origin": "http://localhost:9"},
        )
        read_own_ui = client.get(
            API + "/experiments/get-by-name", params={"experiment_name": name["name"]}, headers={"Origin": by_name}
        )
    for refused in (elsewhere, read_elsewhere):
        assert refused.status_code == 403 and "Cross-origin" in refused.json()["message"], refused.text
        assert "access-control-allow-origin" not in refused.headers
    assert own_ui.status_code == 200, own_ui.text
    assert own_ui_by_name.status_code == 200, own_ui_by_name.text
    assert read_own_ui.status_code == 200 and read_own_ui.headers["access-control-allow-origin"] == by_name


def test_read_only_key_can_search_but_not_write(platform: LivePlatform, owner_resources: dict[str, str]) -> None:
    reader = platform.create_key(platform.unique_owner("reader-"), "read")
    with platform.client(reader) as client:
        writes = [
            client.post(API + "/experiments/create", json={"name": platform.unique_owner("ro-exp-")}),
            client.post(API + "/runs/create", json={"experiment_id": "0"}),
            client.post(API + "/registered-models/create", json={"name": platform.unique_owner("ro-model-")}),
        ]
        reads = [
            client.post(API + "/experiments/search", json={"max_results": 5}),
            client.get(API + "/experiments/search", params={"max_results": 5}),
            client.post(API + "/runs/search", json={"experiment_ids": [owner_resources["experiment"]]}),
            client.get(API + "/registered-models/search"),
            client.post(API + "/registered-models/get-latest-versions", json={"name": owner_resources["model"]}),
            client.post(API + "/logged-models/search", json={"experiment_ids": [owner_resources["experiment"]]}),
            client.post(
                TRACES + "/search",
                json={
                    "locations": [
                        {
                            "type": "MLFLOW_EXPERIMENT",
                            "mlflow_experiment": {"experiment_id": owner_resources["experiment"]},
                        }
                    ]
                },
            ),
            client.post(TRACES + "/batchGetInfos", json={"trace_ids": [owner_resources["trace"]]}),
        ]
    for response in writes:
        assert response.status_code == 403, response.text
        body = response.json()
        assert body["layer"] == "hokusai-api"
        assert body["error_code"] == "PERMISSION_DENIED"
        assert "'write'" in body["message"]
    assert [response.status_code for response in reads] == [200] * len(reads), [r.text for r in reads]
    assert owner_resources["run"] in {r["info"]["run_id"] for r in reads[2].json()["runs"]}
    assert [info["trace_id"] for info in reads[7].json()["trace_infos"]] == [owner_resources["trace"]]


def test_permission_changes_take_effect_on_the_next_request(
    platform: LivePlatform, owner_resources: dict[str, str]
) -> None:
    """MLflow's auth store reads are cached inside MLflow (hokusai.mlflow_auth); every change must still count at once.

    User B (a read/write key) is refused a tag on A's experiment, allowed once an admin grants EDIT, refused again the
    moment it is revoked. User C (an admin key, so an MLflow admin) is allowed, refused once demoted in MLflow,
    allowed again once promoted.
    """
    experiment = owner_resources["experiment"]
    grantee, admin_owner = platform.unique_owner("grantee-"), platform.unique_owner("demoted-")
    resource = {"username": grantee, "resource_type": "experiment", "resource_id": experiment}
    statuses = []
    with platform.client(platform.admin_key) as admin:

        def tag_attempt(key: str, value: str) -> None:
            with platform.client(key) as user:
                response = user.post(
                    API + "/experiments/set-experiment-tag",
                    json={"experiment_id": experiment, "key": "changed-by", "value": value},
                )
            statuses.append(response.status_code)

        def change(method: str, path: str, body: dict[str, object]) -> None:
            response = admin.request(method, path, json=body)
            assert response.status_code == 200, response.text

        grantee_key = platform.create_key(grantee, "read,write")
        tag_attempt(grantee_key, "before-grant")
        change("POST", "/api/mlflow/api/3.0/mlflow/users/permissions/grant", {**resource, "permission": "EDIT"})
        tag_attempt(grantee_key, "granted")
        change("POST", "/api/mlflow/api/3.0/mlflow/users/permissions/revoke", resource)
        tag_attempt(grantee_key, "revoked")
        admin_key = platform.create_key(admin_owner, "read,write,admin")
        tag_attempt(admin_key, "admin")
        change("PATCH", API + "/users/update-admin", {"username": admin_owner, "is_admin": False})
        tag_attempt(admin_key, "demoted")
        change("PATCH", API + "/users/update-admin", {"username": admin_owner, "is_admin": True})
        tag_attempt(admin_key, "promoted")
        experiment_now = admin.get(API + "/experiments/get", params={"experiment_id": experiment}).json()
    tags = experiment_now["experiment"].get("tags", [])
    assert statuses == [403, 200, 403, 200, 403, 200]
    assert {"key": "changed-by", "value": "promoted"} in tags


def test_mlflow_admin_power_follows_the_key_not_the_owner(
    platform: LivePlatform, owner_resources: dict[str, str]
) -> None:
    """An owner's admin key acts as an MLflow admin; the same owner's read/write key, before or after the admin key
    is revoked, acts as a normal user (MLflow keeps one admin flag per user, set when the admin key was first used).
    """
    owner = platform.unique_owner("two-keys-")
    with platform.client(platform.admin_key) as admin:
        created = admin.post("/api/v1/keys", json={"owner": owner, "scopes": ["read", "write", "admin"]})
        assert created.status_code == 201, created.text
        admin_key, admin_key_id = created.json()["key"], created.json()["id"]
        plain_key = platform.create_key(owner, "read,write")
        statuses = {}

        def tag_attempt(key: str, label: str) -> None:
            """A Flask-served call and a native artifact route, both changing user A's resources."""
            experiment, run = owner_resources["experiment"], owner_resources["run"]
            with platform.client(key) as client:
                tagged = client.post(
                    API + "/experiments/set-experiment-tag",
                    json={"experiment_id": experiment, "key": "tagged-by", "value": label},
                )
                written = client.put(f"{ARTIFACTS}/{experiment}/{run}/artifacts/by-{owner}.txt", content=b"x")
            statuses[label] = (tagged.status_code, written.status_code)

        tag_attempt(admin_key, "admin key")
        tag_attempt(plain_key, "read/write key")
        with platform.client(plain_key) as client:
            current = client.get(API + "/users/current")
        assert admin.delete(f"/api/v1/keys/{admin_key_id}").status_code == 200
        tag_attempt(plain_key, "read/write key after revocation")
    assert statuses == {
        "admin key": (200, 200),
        "read/write key": (403, 403),
        "read/write key after revocation": (403, 403),
    }
    assert current.status_code == 200, current.text
    assert current.json()["user"]["is_admin"] is False


def test_an_admin_key_made_after_the_owners_first_request_acts_as_an_mlflow_admin(
    platform: LivePlatform, owner_resources: dict[str, str]
) -> None:
    """The gateway remembers owners it has provisioned; an admin key that arrives later must still be promoted."""
    owner = platform.unique_owner("late-admin-")
    plain_key = platform.create_key(owner, "read,write")
    experiment = owner_resources["experiment"]
    tag = {"experiment_id": experiment, "key": "tagged-by", "value": owner}
    with platform.client(plain_key) as client:
        as_user = client.post(API + "/experiments/set-experiment-tag", json=tag)
    admin_key = platform.create_key(owner, "read,write,admin")
    with platform.client(admin_key) as client:
        as_admin = client.post(API + "/experiments/set-experiment-tag", json=tag)
        listed = client.get(API + "/users/list")

    assert as_user.status_code == 403, as_user.text
    assert as_admin.status_code == 200, as_admin.text
    assert listed.status_code == 200, listed.text


def test_mlflows_fastapi_errors_carry_the_envelope(platform: LivePlatform, owner_resources: dict[str, str]) -> None:
    """MLflow's artifact routes answer FastAPI's `{"detail": ...}`; the gateway adds `error_code` and `message`."""
    run_artifacts = f"{ARTIFACTS}/{owner_resources['experiment']}/{owner_resources['run']}/artifacts"
    with platform.client(owner_resources["key"]) as client:
        directory = client.get(run_artifacts + "/model")
        unnamed = client.put(run_artifacts + "/model/", content=b"no file name")

    assert directory.status_code == 400 and unnamed.status_code == 400
    answer = directory.json()
    assert answer["message"] == answer["detail"]  # FastAPI's field stays for clients that read it
    assert answer["message"].startswith("Artifact path refers to a directory, not a file: ")
    assert (answer["error_code"], answer["layer"]) == ("BAD_REQUEST", "mlflow")
    assert unnamed.json()["message"] == "Artifact path must include a filename (cannot end with '/')."
    assert (unnamed.json()["error_code"], unnamed.json()["layer"]) == ("BAD_REQUEST", "mlflow")


def test_asking_for_workspaces_this_mlflow_has_off_is_a_400_not_mlflows_500(
    platform: LivePlatform, owner_resources: dict[str, str]
) -> None:
    """MLflow answers FEATURE_DISABLED with a 500, which clients retry as a server fault; nothing is written."""
    workspace = {"X-MLflow-Workspace": "team"}
    written = f"{ARTIFACTS}/{owner_resources['experiment']}/{owner_resources['run']}/artifacts/workspace.txt"
    with platform.client(owner_resources["key"]) as client:
        searched = client.post(API + "/experiments/search", json={"max_results": 1}, headers=workspace)
        uploaded = client.put(written, content=b"x", headers=workspace)
        after = client.get(written)

    for answer in (searched, uploaded):
        assert answer.status_code == 400, answer.text
        assert answer.json()["error_code"] == "FEATURE_DISABLED"
        assert answer.json()["message"] == "Workspace APIs are not available: workspaces are not enabled on this server"
        assert answer.json()["layer"] == "mlflow"
    assert after.status_code == 404


_DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(
    ("path", "body", "layer"),
    [
        pytest.param(API + "/runs/log-metric", _DEEP, "mlflow", id="body"),
        # A JSON string holding the nesting: MLflow decodes such a body twice (legacy clients), and so must its checks.
        pytest.param(API + "/runs/log-metric", json.dumps(_DEEP), "mlflow", id="double-encoded body"),
        # A new dataset's tags are a JSON object in a string, which the gateway reads to stamp the owner on.
        pytest.param(
            "/api/mlflow/api/3.0/mlflow/datasets/create",
            json.dumps({"name": "deep", "tags": _DEEP}),
            "hokusai-api",
            id="dataset tags",
        ),
    ],
)
def test_a_body_nested_too_deep_for_any_parser_is_a_400_where_it_is_read(
    platform: LivePlatform, owner_resources: dict[str, str], path: str, body: str, layer: str
) -> None:
    """The gateway reads few bodies; MLflow's checks read the rest, and its JSON parser gave up with a 500."""
    with platform.client(owner_resources["key"]) as client:
        answer = client.post(path, content=body.encode(), headers={"Content-Type": "application/json"})

    assert (answer.status_code, answer.json()["error_code"], answer.json()["layer"]) == (
        400,
        "INVALID_PARAMETER_VALUE",
        layer,
    ), answer.text
    assert "nests JSON too deeply" in answer.json()["message"]


def test_a_number_past_a_floats_range_in_a_rewritten_body_is_a_400_not_another_value(
    platform: LivePlatform, owner_resources: dict[str, str]
) -> None:
    """The gateway rewrites a new run's body (its owner); 1e999999 read as infinity went out as `Infinity`, an
    experiment id MLflow then refused with a 403 (a plain MLflow answers 400)."""
    with platform.client(owner_resources["key"]) as client:
        answer = client.post(
            API + "/runs/create", content=b'{"experiment_id": 1e999999}', headers={"Content-Type": "application/json"}
        )

    assert (answer.status_code, answer.json()["error_code"]) == (400, "INVALID_PARAMETER_VALUE"), answer.text
    assert answer.json()["message"].startswith("The request body holds a number out of range")


def test_an_upload_mlflow_refuses_before_reading_it_closes_the_connection(
    platform: LivePlatform, owner_resources: dict[str, str]
) -> None:
    """User B's 64 MiB upload into user A's run: MLflow's 403 comes after 1 MiB, and nobody sends the rest.

    The client sends only the first MiB and then reads. The answer must close the connection: a server keeping it
    alive would wait for the rest of the body before it could read the next request.
    """
    intruder = platform.create_key(platform.unique_owner("early-refusal-"), "read,write")
    path = f"{ARTIFACTS}/{owner_resources['experiment']}/{owner_resources['run']}/artifacts/big.bin"
    head = (
        f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1:{platform.port}\r\nAuthorization: Bearer {intruder}\r\n"
        f"Content-Length: {64 * 1024 * 1024}\r\n\r\n"
    )
    answer = raw_request(platform.port, head.encode() + b"b" * (1024 * 1024), timeout=30.0)

    assert answer.status == 403, answer.body[:500]
    assert answer.headers["connection"] == "close"
    assert answer.json()["layer"] == "mlflow"  # type: ignore[index]


def test_a_client_hanging_up_mid_upload_is_logged_as_such_not_as_mlflow_down(
    platform: LivePlatform, owner_resources: dict[str, str]
) -> None:
    """aiohttp wraps the end of a streamed body in a connection error; that is the client's doing, not MLflow's."""
    name = f"hang-up-{uuid.uuid4().hex}.bin"
    path = f"{ARTIFACTS}/{owner_resources['experiment']}/{owner_resources['run']}/artifacts/{name}"
    head = (
        f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1:{platform.port}\r\n"
        f"Authorization: Bearer {owner_resources['key']}\r\nContent-Length: {8 * 1024 * 1024}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", platform.port), timeout=30.0) as sock:
        sock.sendall(head.encode() + b"h" * (1024 * 1024))

    def access_lines() -> list[str]:  # written once the request is over
        return [line for line in platform.stderr_path.read_text().splitlines() if f" PUT {path} " in line]

    deadline = time.monotonic() + 30.0  # a bound against hanging, not a timing assertion
    while not access_lines() and time.monotonic() < deadline:
        time.sleep(0.2)

    [access_line] = access_lines()
    assert "hokusai.access" in access_line
    assert f" PUT {path} 0 " in access_line  # no answer was sent: nobody was there to read it
    assert f"request body ended early (client gone or stalled): PUT {path}" in platform.stderr_path.read_text()
