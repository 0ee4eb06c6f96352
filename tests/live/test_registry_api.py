"""The tokenized model registry API against the live platform: real gateway, real MLflow, real permissions."""

from __future__ import annotations

import base64
import json
import math
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.platform import LivePlatform, create_key_offline
from tests.support.sdk_live import User, new_user

ACCURACY = 0.875
TOKENIZED = "/api/v1/models/tokenized"
BASELINE = "/api/v1/models/baseline"
MLFLOW = "/api/mlflow/api/2.0/mlflow"
PAGE_VERSIONS = 105
RACERS = 6

_LOG_RUN = f"""
import json, tempfile
import mlflow, numpy as np
from sklearn.linear_model import LogisticRegression

model = LogisticRegression().fit(np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0, 0, 1, 1]))
with mlflow.start_run() as run:
    mlflow.log_metric("accuracy", {ACCURACY})
    logged = mlflow.sklearn.log_model(model, name="model")  # MLflow 3: a logged model, outside the run's artifacts
    with tempfile.TemporaryDirectory() as folder:
        mlflow.sklearn.save_model(model, folder + "/legacy")
        mlflow.log_artifacts(folder + "/legacy", "legacy")  # the MLflow 2 layout: an MLmodel file in the run
print(json.dumps({{"run_id": run.info.run_id, "experiment_id": run.info.experiment_id, "model_id": logged.model_id}}))
"""

_LOAD_MODELS = """
import base64
import json
import mlflow
print(json.dumps([mlflow.pyfunc.load_model(uri).predict([[0.0], [3.0]]).tolist() for uri in {uris!r}]))
"""


@dataclass(frozen=True)
class LoggedRun:
    run_id: str
    experiment_id: str
    model_id: str


@pytest.fixture(scope="module")
def alice(platform: LivePlatform) -> User:
    return new_user(platform, "alice")


@pytest.fixture(scope="module")
def bob(platform: LivePlatform) -> User:
    return new_user(platform, "bob")


@pytest.fixture(scope="module")
def run(platform: LivePlatform, alice: User) -> LoggedRun:
    """One run of alice's, logged with the stock MLflow client through the gateway."""
    result = platform.run_python(_LOG_RUN, platform.mlflow_env(alice.key))
    assert result.returncode == 0, result.stderr[-3000:]
    return LoggedRun(**json.loads(result.stdout.strip().splitlines()[-1]))


@pytest.fixture
def as_alice(platform: LivePlatform, alice: User) -> Iterator[httpx.Client]:
    with platform.client(alice.key) as client:
        yield client


@pytest.fixture
def as_bob(platform: LivePlatform, bob: User) -> Iterator[httpx.Client]:
    with platform.client(bob.key) as client:
        yield client


@pytest.fixture
def as_admin(platform: LivePlatform) -> Iterator[httpx.Client]:
    with platform.client(platform.admin_key) as client:
        yield client


def unique(stem: str) -> str:
    return f"{stem}-{uuid.uuid4().hex[:10]}"


def body(run: LoggedRun, **overrides: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "mlflow_run_id": run.run_id,
        "model_name": unique("model"),
        "token_id": unique("tok"),
        "metric_name": "accuracy",
        "baseline_value": ACCURACY,
    }
    fields.update(overrides)
    return fields


def assert_error(response: httpx.Response, status: int, error_code: str, layer: str = "hokusai-api") -> str:
    assert response.status_code == status, response.text
    payload = response.json()
    assert (payload["error_code"], payload["layer"]) == (error_code, layer), payload
    return str(payload["message"])


def load_predictions(platform: LivePlatform, user: User, uris: list[str]) -> list[list[int]]:
    result = platform.run_python(_LOAD_MODELS.format(uris=uris), platform.mlflow_env(user.key))
    assert result.returncode == 0, result.stderr[-3000:]
    return list(json.loads(result.stdout.strip().splitlines()[-1]))


# --- registration ----------------------------------------------------------------------------------------------


def test_claim_registers_loadable_versions_with_every_tag(
    platform: LivePlatform, as_alice: httpx.Client, bob: User, run: LoggedRun
) -> None:
    request = body(run, tags={"team": "vision", "epochs": 3}, eval_spec="spec-7", description="first try")

    response = as_alice.post(TOKENIZED, json=request)

    assert response.status_code == 201, response.text
    created = response.json()
    token_id = str(request["token_id"]).upper()
    assert created["created"] is True and created["warnings"] == []
    assert (created["model_name"], created["version"], created["token_id"]) == (request["model_name"], "1", token_id)
    # MLflow 3 logs the model outside the run, so `runs:/<id>/model` resolves to the logged model, as the client does.
    assert (created["run_id"], created["source"]) == (run.run_id, f"models:/{run.model_id}")
    assert created["model_uri"] == f"models:/{request['model_name']}/1"
    assert created["tags"] == {
        "hokusai_token_id": token_id,
        "benchmark_metric": "accuracy",
        "benchmark_value": repr(ACCURACY),
        "hokusai_status": "registered",
        "mlflow_run_id": run.run_id,
        "hokusai.eval_spec": "spec-7",
        "team": "vision",
        "epochs": "3",
    }
    legacy = as_alice.post(TOKENIZED, json=body(run, artifact_path="legacy"))
    assert legacy.status_code == 201, legacy.text
    assert legacy.json()["source"].endswith(f"/{run.run_id}/artifacts/legacy")
    # Both kinds of source load with the stock client, for another user too (default permission READ).
    uris = [created["model_uri"], legacy.json()["model_uri"]]
    assert load_predictions(platform, bob, uris) == [[0, 1], [0, 1]]


def test_repeated_claim_is_idempotent(as_alice: httpx.Client, run: LoggedRun) -> None:
    request = body(run)
    first = as_alice.post(TOKENIZED, json=request, headers={"Idempotency-Key": "one"})

    again = as_alice.post(TOKENIZED, json={**request, "token_id": str(request["token_id"]).upper()})

    assert (first.status_code, again.status_code) == (201, 200), again.text
    assert again.json()["created"] is False
    assert {key: value for key, value in again.json().items() if key != "created"} == {
        key: value for key, value in first.json().items() if key != "created"
    }
    other_source = as_alice.post(TOKENIZED, json={**request, "artifact_path": "legacy"})
    assert (other_source.status_code, other_source.json()["version"]) == (201, "2")


def test_a_source_naming_the_tokenized_version_itself_is_a_repeat_not_a_copy(
    as_alice: httpx.Client, run: LoggedRun
) -> None:
    """`models:/m/latest` into `m` copied the latest version into a new one each time (a walkthrough's registry grew a
    version per repeat); the version itself is the registration, whatever spelling names it."""
    request = body(run)
    name, first = request["model_name"], as_alice.post(TOKENIZED, json=request)
    assert first.status_code == 201, first.text

    for source in (f"models:/{name}/latest", f"models:/{name}/1", f"models:/{name}/latest"):
        again = as_alice.post(TOKENIZED, json={**body(run, model_name=name, token_id=request["token_id"]),
                                               "mlflow_run_id": None, "model_uri": source})  # fmt: skip
        assert (again.status_code, again.json()["version"], again.json()["created"]) == (200, "1", False), again.text
    other_baseline = as_alice.post(
        TOKENIZED, json={**body(run, model_name=name, token_id=request["token_id"], baseline_value=0.5),
                         "mlflow_run_id": None, "model_uri": f"models:/{name}/latest"},
    )  # fmt: skip
    assert other_baseline.json()["error_code"] == "REGISTRATION_CONFLICT", other_baseline.text
    versions = as_alice.get(f"{MLFLOW}/model-versions/search", params={"filter": f"name = '{name}'"})
    assert [version["version"] for version in versions.json()["model_versions"]] == ["1"]


def test_a_repeat_warns_of_the_tags_and_description_it_did_not_apply(as_alice: httpx.Client, run: LoggedRun) -> None:
    request = body(run, tags={"team": "growth"}, description="first", eval_spec="holdout")

    first = as_alice.post(TOKENIZED, json=request)
    again = as_alice.post(TOKENIZED, json={**request, "tags": {"team": "search"}, "eval_spec": "full"})
    same = as_alice.post(TOKENIZED, json={**request, "description": None})

    assert (first.status_code, again.status_code, same.status_code) == (201, 200, 200), again.text
    assert again.json()["warnings"] == [
        f"Model '{request['model_name']}' version 1 already holds this registration, and a repeat changes nothing: "
        "this request's tag 'team' and tag 'hokusai.eval_spec' differ from the version's and were not applied. Change "
        "them in MLflow (MlflowClient.set_model_version_tag, update_model_version)."
    ]
    assert again.json()["tags"]["team"] == "growth"
    assert same.json()["warnings"] == first.json()["warnings"] == []


def test_a_source_mlflow_refuses_leaves_no_model_and_no_claim_behind(as_alice: httpx.Client, run: LoggedRun) -> None:
    request = {k: v for k, v in body(run).items() if k != "mlflow_run_id"} | {"model_uri": "foo://bar"}
    refused = as_alice.post(TOKENIZED, json=request)
    assert "Invalid model version source: 'foo://bar'" in assert_error(
        refused, 400, "INVALID_PARAMETER_VALUE", "mlflow"
    )

    left = as_alice.get("/api/mlflow/api/2.0/mlflow/registered-models/get", params={"name": request["model_name"]})
    assert left.status_code == 404, left.text
    # The token is free again, and the same model name takes a good source at once.
    retried = as_alice.post(TOKENIZED, json=body(run, model_name=request["model_name"], token_id=request["token_id"]))
    assert (retried.status_code, retried.json()["version"]) == (201, "1"), retried.text


def test_a_repeat_asking_for_another_metric_or_baseline_is_refused(as_alice: httpx.Client, run: LoggedRun) -> None:
    request = body(run)
    first = as_alice.post(TOKENIZED, json=request)
    assert first.status_code == 201, first.text

    for change in ({"baseline_value": 0.2}, {"metric_name": "loss"}):
        refused = as_alice.post(TOKENIZED, json={**request, **change, "strict": False})
        assert refused.status_code == 409, refused.text
        assert (refused.json()["error_code"], refused.json()["layer"]) == ("REGISTRATION_CONFLICT", "hokusai-api")
        assert f"with metric 'accuracy' and baseline {ACCURACY!r}" in refused.json()["message"]
    # What was registered stays as it was.
    stored = as_alice.get(f"{TOKENIZED}/{request['model_name']}/versions/{first.json()['version']}")
    assert (stored.json()["metric_name"], stored.json()["baseline_value"]) == ("accuracy", ACCURACY)


def test_conflict_names_the_model_and_never_the_owner(
    as_alice: httpx.Client, as_bob: httpx.Client, alice: User, run: LoggedRun
) -> None:
    request = body(run)
    assert as_alice.post(TOKENIZED, json=request).status_code == 201
    token_id = str(request["token_id"]).upper()

    by_bob = as_bob.post(TOKENIZED, json=body(run, token_id=request["token_id"]))
    other_model = as_alice.post(TOKENIZED, json=body(run, token_id=request["token_id"]))

    assert assert_error(by_bob, 409, "TOKEN_ALREADY_CLAIMED") == (
        f"Token '{token_id}' is already claimed by model '{request['model_name']}'. A token belongs to one model: "
        "choose another token id, or ask an admin to transfer this one."
    )
    assert assert_error(other_model, 409, "TOKEN_ALREADY_CLAIMED") == (
        f"Token '{token_id}' is already claimed by your model '{request['model_name']}'. A token belongs to one "
        f"model: register new versions under '{request['model_name']}', or choose another token id."
    )
    assert alice.owner not in by_bob.text
    same_name = as_bob.post(TOKENIZED, json={**request, "artifact_path": "legacy"})
    assert f"already claimed by another account, under model name '{request['model_name']}'" in assert_error(
        same_name, 409, "TOKEN_ALREADY_CLAIMED"
    )
    assert alice.owner not in same_name.text


def test_metric_mismatch_warns_and_strict_mode_refuses(as_alice: httpx.Client, run: LoggedRun) -> None:
    lenient = as_alice.post(TOKENIZED, json=body(run, baseline_value=0.5))
    strict = as_alice.post(TOKENIZED, json=body(run, baseline_value=0.5, strict=True))
    missing = as_alice.post(TOKENIZED, json=body(run, metric_name="f1", strict=True))
    close_enough = as_alice.post(TOKENIZED, json=body(run, baseline_value=ACCURACY * (1 + 1e-7), strict=True))

    assert lenient.status_code == 201
    assert lenient.json()["warnings"] == [
        f"metric 'accuracy' of run '{run.run_id}' is {ACCURACY}, not the baseline 0.5"
    ]
    assert "strict mode" in assert_error(strict, 400, "INVALID_PARAMETER_VALUE")
    assert "has no metric 'f1'" in assert_error(missing, 400, "INVALID_PARAMETER_VALUE")
    assert (strict.json()["field"], missing.json()["field"]) == ("baseline_value", "metric_name")
    assert close_enough.status_code == 201 and close_enough.json()["warnings"] == []


def test_a_logged_model_uri_is_checked_against_the_run_it_was_logged_in(as_alice: httpx.Client, run: LoggedRun) -> None:
    """`models:/<model id>`, what `log_model` returns as `model_uri`, gets what a `runs:/` source gets."""
    request = {k: v for k, v in body(run, baseline_value=0.5).items() if k != "mlflow_run_id"}
    request["model_uri"] = f"models:/{run.model_id}"

    lenient = as_alice.post(TOKENIZED, json=request)
    strict = as_alice.post(TOKENIZED, json={**request, "model_name": unique("strict"), "strict": True})
    unknown = as_alice.post(TOKENIZED, json={**request, "model_uri": "models:/m-0123456789abcdef0123456789abcdef"})

    assert lenient.status_code == 201, lenient.text
    registered = lenient.json()
    assert (registered["run_id"], registered["tags"]["mlflow_run_id"]) == (run.run_id, run.run_id)
    assert registered["source"] == request["model_uri"]
    assert registered["warnings"] == [f"metric 'accuracy' of run '{run.run_id}' is {ACCURACY}, not the baseline 0.5"]
    assert "strict mode" in assert_error(strict, 400, "INVALID_PARAMETER_VALUE")
    assert unknown.status_code == 404 and unknown.json()["layer"] == "mlflow", unknown.text


def test_registered_version_sources_are_checked_and_a_source_without_a_run_is_not_confirmed(
    as_alice: httpx.Client, run: LoggedRun
) -> None:
    first = as_alice.post(TOKENIZED, json=body(run))
    assert first.status_code == 201, first.text
    name = first.json()["model_name"]
    alias = as_alice.post(f"{MLFLOW}/registered-models/alias", json={"name": name, "alias": "champion", "version": "1"})
    assert alias.status_code == 200, alias.text
    mismatch = f"metric 'accuracy' of run '{run.run_id}' is {ACCURACY}, not the baseline 0.5"

    for uri in (f"models:/{name}/1", f"models:/{name}@champion", f"models:/{name}/latest"):
        request = {k: v for k, v in body(run, baseline_value=0.5).items() if k != "mlflow_run_id"} | {"model_uri": uri}
        registered = as_alice.post(TOKENIZED, json=request)
        again = as_alice.post(TOKENIZED, json=request)  # an alias or `latest` is pinned, so a repeat finds it
        assert registered.status_code == 201, registered.text
        assert registered.json()["warnings"] == [mismatch], uri
        assert registered.json()["tags"]["mlflow_run_id"] == run.run_id, uri
        assert registered.json()["source"] == f"models:/{name}/1", uri
        assert (again.status_code, again.json()["created"], again.json()["version"]) == (200, False, "1"), again.text
        assert "strict mode" in assert_error(as_alice.post(TOKENIZED, json=request | {"strict": True}), 400,
                                             "INVALID_PARAMETER_VALUE")  # fmt: skip

    no_run = {k: v for k, v in body(run).items() if k != "mlflow_run_id"} | {"model_uri": "s3://bucket/model"}
    unchecked = as_alice.post(TOKENIZED, json=no_run)
    refused = as_alice.post(TOKENIZED, json=no_run | {"model_name": unique("strict"), "strict": True})
    assert unchecked.status_code == 201, unchecked.text
    no_check = f"the source has no run, so no logged metric confirms the baseline {ACCURACY}"
    assert unchecked.json()["warnings"] == [no_check]
    assert "the source has no run" in assert_error(refused, 400, "INVALID_PARAMETER_VALUE")


def test_model_names_with_quotes_and_unicode_survive_mlflow_filters(as_alice: httpx.Client, run: LoggedRun) -> None:
    name = unique("it's a \"quoted\" \\ módel ') OR name LIKE ('%")
    request = body(run, model_name=name)

    first = as_alice.post(TOKENIZED, json=request)
    again = as_alice.post(TOKENIZED, json=request)
    latest = as_alice.get(f"{TOKENIZED}/{quote(name, safe='')}/versions/latest")

    assert (first.status_code, again.status_code) == (201, 200), again.text
    assert again.json()["version"] == first.json()["version"]
    assert latest.status_code == 200, latest.text
    assert (latest.json()["model_name"], latest.json()["version"]) == (name, "1")


def test_baseline_registration(as_alice: httpx.Client, alice: User, run: LoggedRun) -> None:
    model_type = unique("clf").lower()

    response = as_alice.post(
        BASELINE,
        json={"model_type": model_type, "mlflow_run_id": run.run_id, "metadata": {"dataset": "d1", "rows": 4}},
    )

    assert response.status_code == 201, response.text
    baseline = response.json()
    assert baseline["model_name"] == f"hokusai-baseline-{model_type}"
    assert (baseline["version"], baseline["run_id"], baseline["model_type"]) == ("1", run.run_id, model_type)
    assert baseline["model_uri"] == f"models:/hokusai-baseline-{model_type}/1"
    assert baseline["tags"] == {
        "is_baseline": "true",
        "model_type": model_type,
        "mlflow_run_id": run.run_id,
        "registered_by": alice.owner,
        "metrics": json.dumps({"accuracy": ACCURACY}, separators=(",", ":")),
        "metadata": json.dumps({"dataset": "d1", "rows": 4}, separators=(",", ":"), sort_keys=True),
    }
    assert baseline["warnings"] == []
    same, bare, empty, changed = (
        as_alice.post(BASELINE, json={"model_type": model_type, "mlflow_run_id": run.run_id, **extra})
        for extra in ({"metadata": {"rows": 4, "dataset": "d1"}}, {}, {"metadata": {}}, {"metadata": {"dataset": "d2"}})
    )
    for repeat in (same, bare, empty, changed):
        assert repeat.status_code == 200, repeat.text
        assert (repeat.json()["version"], repeat.json()["created"]) == ("1", False)
        assert repeat.json()["tags"] == baseline["tags"]  # a repeat replaces nothing
    assert same.json()["warnings"] == bare.json()["warnings"] == empty.json()["warnings"] == []  # {} is no metadata
    (left_out,) = changed.json()["warnings"]
    assert left_out.startswith(f"Model 'hokusai-baseline-{model_type}' version 1 is already this run's model")
    assert "metadata differs from the version's and was not applied" in left_out
    shouted = as_alice.post(BASELINE, json={"model_type": model_type.upper(), "mlflow_run_id": run.run_id})
    assert (shouted.status_code, shouted.json()["model_name"]) == (200, baseline["model_name"])  # one series per type
    bad = as_alice.post(BASELINE, json={"model_type": "Bad Type", "mlflow_run_id": run.run_id})
    assert "model_type" in assert_error(bad, 400, "INVALID_PARAMETER_VALUE")

    listed = as_alice.get(BASELINE, params={"model_type": model_type.upper()})
    everything = as_alice.get(BASELINE, params={"max_results": 1000})
    assert listed.status_code == everything.status_code == 200, listed.text
    assert listed.json() == {"baselines": [baseline | {"created": False}], "next_page_token": None}
    assert baseline["model_name"] in {entry["model_name"] for entry in everything.json()["baselines"]}
    assert all(entry["tags"]["is_baseline"] == "true" for entry in everything.json()["baselines"])
    assert "model_type" in assert_error(
        as_alice.get(BASELINE, params={"model_type": "a b"}), 400, "INVALID_PARAMETER_VALUE"
    )
    not_tokenized = as_alice.get(f"{TOKENIZED}/{baseline['model_name']}/versions/1")
    assert f"`hokusai models baselines --type {model_type}`" in assert_error(
        not_tokenized, 404, "RESOURCE_DOES_NOT_EXIST"
    )


def test_every_user_adds_baselines_of_a_type_and_none_can_remove_anothers(
    as_alice: httpx.Client, as_bob: httpx.Client, as_admin: httpx.Client, bob: User, run: LoggedRun
) -> None:
    model_type = unique("shared").lower()
    name = f"hokusai-baseline-{model_type}"
    request = {"model_type": model_type, "mlflow_run_id": run.run_id}

    alices = as_alice.post(BASELINE, json=request)
    # 403 from MLflow while the first registrant owned the model
    bobs = as_bob.post(BASELINE, json={**request, "artifact_path": "legacy"})
    again = as_bob.post(BASELINE, json=request)  # the same model again is the version it became, not a twin

    assert (alices.status_code, bobs.status_code) == (201, 201), bobs.text
    assert (alices.json()["version"], bobs.json()["version"]) == ("1", "2")
    assert bobs.json()["tags"]["registered_by"] == bob.owner
    assert (again.status_code, again.json()["version"], again.json()["created"]) == (200, "1", False), again.text
    version_1 = {"name": name, "version": "1"}
    assert as_bob.get(f"{MLFLOW}/model-versions/get", params=version_1).status_code == 200
    first_page = as_bob.get(BASELINE, params={"model_type": model_type, "max_results": 1}).json()
    page_token = first_page["next_page_token"]
    second_page = as_bob.get(BASELINE, params={"model_type": model_type, "max_results": 1, "page_token": page_token})
    paged = [*first_page["baselines"], *second_page.json()["baselines"]]
    assert [(entry["version"], entry["tags"]["registered_by"]) for entry in paged] == [
        ("1", alices.json()["tags"]["registered_by"]),
        ("2", bob.owner),
    ]
    for client, call, payload in [
        (as_bob, "model-versions/delete", version_1),
        (as_alice, "model-versions/delete", {"name": name, "version": "2"}),
        (as_alice, "registered-models/delete", {"name": name}),
    ]:
        assert_error(client.request("DELETE", f"{MLFLOW}/{call}", json=payload), 403, "PERMISSION_DENIED", "mlflow")
    assert as_admin.request("DELETE", f"{MLFLOW}/model-versions/delete", json=version_1).status_code == 200


@pytest.mark.parametrize(
    ("call", "field"), [("registered-models/create", "name"), ("registered-models/rename", "new_name")]
)
@pytest.mark.parametrize("prefix", ["hokusai-baseline-", "Hokusai-Baseline-", " hokusai-baseline-"])
@pytest.mark.parametrize("double_encoded", [False, True], ids=["json", "json-in-a-json-string"])
def test_users_cannot_name_a_model_as_a_baseline(
    as_bob: httpx.Client, as_admin: httpx.Client, call: str, field: str, prefix: str, double_encoded: bool
) -> None:
    squatted = prefix + unique("squat")
    own = unique("own")
    assert as_bob.post(f"{MLFLOW}/registered-models/create", json={"name": own}).status_code == 200
    payload = json.dumps({"name": own, field: squatted})
    # MLflow decodes a body that is a JSON string a second time (legacy clients), so that is the same request to it.
    content = json.dumps(payload) if double_encoded else payload

    refused = as_bob.post(f"{MLFLOW}/{call}", content=content, headers={"Content-Type": "application/json"})

    assert "reserved for Hokusai's baselines" in assert_error(refused, 403, "PERMISSION_DENIED")
    assert as_admin.get(f"{MLFLOW}/registered-models/get", params={"name": squatted}).status_code == 404
    assert as_admin.get(f"{MLFLOW}/registered-models/get", params={"name": own}).status_code == 200


def test_admins_may_choose_where_an_experiments_artifacts_go(as_admin: httpx.Client, tmp_path: Path) -> None:
    location = (tmp_path / "artifacts").as_uri()
    created = as_admin.post(
        f"{MLFLOW}/experiments/create", json={"name": unique("placed"), "artifact_location": location}
    )

    assert created.status_code == 200, created.text
    experiment = as_admin.get(f"{MLFLOW}/experiments/get", params={"experiment_id": created.json()["experiment_id"]})
    assert experiment.json()["experiment"]["artifact_location"] == location


def test_admins_may_name_a_model_as_a_baseline(as_admin: httpx.Client) -> None:
    name = unique("hokusai-baseline-admin")

    created = as_admin.post(f"{MLFLOW}/registered-models/create", json={"name": name})

    assert created.status_code == 200, created.text


def test_a_registered_versions_hokusai_tags_cannot_be_rewritten_through_mlflow(
    as_alice: httpx.Client, as_admin: httpx.Client, run: LoggedRun
) -> None:
    request = body(run)
    assert as_alice.post(TOKENIZED, json=request).status_code == 201
    version = {"name": request["model_name"], "version": "1"}
    other_model = unique("untokenized")
    assert as_alice.post(f"{MLFLOW}/registered-models/create", json={"name": other_model}).status_code == 200

    attempts = [
        as_alice.post(f"{MLFLOW}/model-versions/set-tag", json={**version, "key": "benchmark_value", "value": "0.99"}),
        as_alice.post(f"{MLFLOW}/model-versions/set-tag", json={**version, "key": "hokusai.eval_spec", "value": "x"}),
        as_alice.request("DELETE", f"{MLFLOW}/model-versions/delete-tag", json={**version, "key": "hokusai_token_id"}),
        as_alice.post(
            "/api/mlflow/ajax-api/2.0/mlflow/model-versions/create",
            json={
                "name": other_model,
                "source": f"runs:/{run.run_id}/model",
                "tags": [{"key": "team", "value": "a"}, {"key": "hokusai_token_id", "value": "SOMEONE-ELSES"}],
            },
        ),
    ]
    own_tag = as_alice.post(f"{MLFLOW}/model-versions/set-tag", json={**version, "key": "team", "value": "growth"})
    by_admin = as_admin.post(f"{MLFLOW}/model-versions/set-tag", json={**version, "key": "hokusai.note", "value": "ok"})

    refused_tags = ["benchmark_value", "hokusai.eval_spec", "hokusai_token_id", "hokusai_token_id"]
    for refused, tag in zip(attempts, refused_tags, strict=True):
        assert f"Tag '{tag}' belongs to Hokusai" in assert_error(refused, 403, "PERMISSION_DENIED")
    assert (own_tag.status_code, by_admin.status_code) == (200, 200), own_tag.text + by_admin.text
    registered = as_alice.get(f"{TOKENIZED}/{request['model_name']}/versions/1").json()
    assert (registered["baseline_value"], registered["token_id"]) == (ACCURACY, str(request["token_id"]).upper())
    versions = as_alice.post(f"{MLFLOW}/model-versions/search", json={"filter": f"name = '{other_model}'"})
    assert versions.json().get("model_versions", []) == []


def test_a_copy_of_a_tokenized_version_is_refused_with_the_way_to_copy_it(
    platform: LivePlatform, as_alice: httpx.Client, alice: User, run: LoggedRun
) -> None:
    """MlflowClient.copy_model_version copies every tag, Hokusai's too; the refusal says how to copy without them."""
    request = body(run)
    assert as_alice.post(TOKENIZED, json=request).status_code == 201
    source, destination = f"models:/{request['model_name']}/1", unique("copy")
    copy = f"""
import mlflow
try:
    mlflow.MlflowClient().copy_model_version({source!r}, {destination!r})
except mlflow.MlflowException as exc:
    print(exc.message)
"""
    result = platform.run_python(copy, platform.mlflow_env(alice.key))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MlflowClient.copy_model_version copies every tag" in result.stdout
    assert f"mlflow.register_model('{source}', '{destination}')" in result.stdout

    workaround = f"import mlflow; print(mlflow.register_model({source!r}, {destination!r}).version)"
    registered = platform.run_python(workaround, platform.mlflow_env(alice.key))
    assert registered.returncode == 0 and registered.stdout.strip().splitlines()[-1] == "1", registered.stderr[-3000:]


# --- bad input ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"baseline_value": math.nan}, "baseline_value"),
        ({"baseline_value": math.inf}, "baseline_value"),
        ({"baseline_value": -math.inf}, "baseline_value"),
        ({"baseline_value": True}, "baseline_value"),
        ({"baseline_value": "0.5"}, "baseline_value"),
        ({"baseline_value": 10**400}, "baseline_value"),
        ({"token_id": "T" * 65}, "token_id"),
        ({"token_id": "-leading"}, "token_id"),
        ({"token_id": "trailing-"}, "token_id"),
        ({"token_id": "tökén"}, "token_id"),
        ({"token_id": ""}, "token_id"),
        ({"metric_name": "acc;uracy"}, "metric_name"),
        ({"model_name": " padded "}, "model_name"),
        ({"model_name": "ctrl\x07"}, "model_name"),
        ({"model_name": "Hokusai-Baseline-mine"}, "model_name"),
        ({"mlflow_run_id": "../etc"}, "mlflow_run_id"),
        ({"model_uri": "runs:/abc/model"}, "model_uri"),
        # A path on some disk: MLflow's 400 named no field, after a token had been claimed for it.
        ({"mlflow_run_id": None, "model_uri": "nonsense"}, "model_uri"),
        ({"mlflow_run_id": None, "model_uri": "file:///tmp/model"}, "model_uri"),
        # MLflow answered these with a 500 (a 502 here) until 2026-11-28; a security review sent them.
        ({"mlflow_run_id": None, "model_uri": "models:/name@"}, "model_uri"),
        ({"mlflow_run_id": None, "model_uri": "models:/name/Production"}, "model_uri"),
        ({"mlflow_run_id": None, "model_uri": "models:/name/99999999999999999999"}, "model_uri"),
        # Valid JSON, not Unicode: the first write failed on it with a 500.
        ({"model_name": "\ud800"}, "model_name"),
        ({"description": "a\udfffb"}, "description"),
        ({"tags": {"team": "\ud800"}}, "tags.team"),
        ({"tags": {"hokusai_token_id": "X"}}, "tags"),
        ({"eval_spec": "x" * 501}, "eval_spec"),
        ({"surprise": 1}, "surprise"),
        # Named as the field sent, not as the runs:/ URI built from it (a probe, 2026-11-29).
        ({"artifact_path": " "}, "artifact_path"),
        ({"artifact_path": "a" * 470}, "artifact_path"),
        # NUL is text to SQLite, an error to PostgreSQL: refused alike on both.
        ({"description": "a\x00b"}, "description"),
        ({"tags": {"team": "a\x00b"}}, "tags"),
        ({"eval_spec": "\x00x"}, "eval_spec"),
        ({"tags": {"mlflow.user": "someone-else"}}, "tags"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(
    as_alice: httpx.Client, run: LoggedRun, overrides: dict[str, object], field: str
) -> None:
    request = json.dumps(body(run, **overrides))  # json.dumps writes NaN/Infinity, as a careless client would

    response = as_alice.post(TOKENIZED, content=request, headers={"content-type": "application/json"})

    assert field in assert_error(response, 400, "INVALID_PARAMETER_VALUE")


def test_malformed_json_and_bad_queries_are_400(as_alice: httpx.Client, as_admin: httpx.Client, run: LoggedRun) -> None:
    broken = as_alice.post(TOKENIZED, content=b"{not json", headers={"content-type": "application/json"})
    paging = as_alice.get(TOKENIZED, params={"page_token": "garbage"})
    deep_paging = as_alice.get(TOKENIZED, params={"page_token": base64.b64encode(b"[" * 1000).decode()})  # was a 500
    too_many = as_alice.get(TOKENIZED, params={"max_results": 1001})
    version = as_alice.get(f"{TOKENIZED}/some-model/versions/first")
    since = as_admin.get("/api/v1/audit", params={"since": "yesterday"})
    twice = as_alice.get(TOKENIZED, params=[("token_id", "ALPHA"), ("token_id", "BETA")])  # was: BETA's, silently
    form = as_alice.post(TOKENIZED, data={"model_name": "m"})  # what `curl -d` sends
    untyped = as_alice.post(TOKENIZED, content=json.dumps(body(run)).encode())  # JSON, without saying so
    null_tag = as_alice.post(TOKENIZED, json=body(run, tags={"team": None}))

    for response in (broken, paging, deep_paging, too_many, version, since, twice, form, untyped, null_tag):
        assert_error(response, 400, "INVALID_PARAMETER_VALUE")
    # One line naming the tag, not one per type a tag may have (str, int, float, bool).
    assert (
        null_tag.json()["message"]
        == "Invalid request: tags: the value of 'team' must be a string, a number or a boolean, not null"
    )
    assert null_tag.json()["field"] == "tags"
    assert twice.json()["message"] == "token_id: is given more than once; give it once"
    assert form.json()["message"] == (
        "The request body must be JSON, sent with Content-Type: application/json "
        "(not 'application/x-www-form-urlencoded')."
    )
    assert untyped.json()["message"].endswith("Content-Type: application/json (none was given).")
    expected = "The request body is not valid JSON: Expecting property name enclosed in double quotes (at character 1)."
    assert broken.json()["message"] == expected


@pytest.mark.parametrize(
    ("depth", "message"),
    [
        # Parsed, then refused by the body checks: nesting some hundreds deep reached Python's recursion limit in
        # them, a 500 (security review).
        (900, "Invalid request: tags: the value of 'team' must be a string, a number or a boolean, not a list"),
        # Beyond what the JSON parser itself takes: its failure is a 400 in the envelope, never a 500.
        (100_000, "The request body could not be read as JSON: it is not UTF-8, nests too deeply"),
    ],
    ids=["body-checks", "json-parser"],
)
def test_deeply_nested_json_is_a_400(as_alice: httpx.Client, run: LoggedRun, depth: int, message: str) -> None:
    request = json.dumps(body(run))[:-1] + ', "tags": {"team": ' + "[" * depth + "1" + "]" * depth + "}}"

    response = as_alice.post(TOKENIZED, content=request, headers={"content-type": "application/json"})

    assert assert_error(response, 400, "INVALID_PARAMETER_VALUE").startswith(message)


def test_missing_run_or_model_path_is_404(as_alice: httpx.Client, as_admin: httpx.Client, run: LoggedRun) -> None:
    missing = body(run, mlflow_run_id="0" * 32)

    for client in (as_alice, as_admin):
        message = assert_error(client.post(TOKENIZED, json=missing), 404, "RESOURCE_DOES_NOT_EXIST", layer="mlflow")
        assert f"read run '{'0' * 32}'" in message
        assert "does not look like a run id" not in message
    unset_run_id = as_alice.post(TOKENIZED, json=body(run, model_uri="runs:/None/model", mlflow_run_id=None))
    unset = assert_error(unset_run_id, 404, "RESOURCE_DOES_NOT_EXIST", layer="mlflow")
    assert "'None' does not look like a run id, which is 32 hex characters (run.info.run_id)" in unset
    no_model = as_alice.post(TOKENIZED, json=body(run, artifact_path="nothing-here"))
    assert "no model at 'nothing-here'" in assert_error(no_model, 404, "RESOURCE_DOES_NOT_EXIST")


# --- permissions ---------------------------------------------------------------------------------------------------


def test_a_run_the_caller_may_not_read_is_403_from_mlflow(
    as_admin: httpx.Client, as_bob: httpx.Client, bob: User, run: LoggedRun
) -> None:
    # The default permission is READ, so everyone reads every run; an explicit DENY makes alice's run unreadable.
    grant = {"username": bob.owner, "resource_type": "experiment", "resource_id": run.experiment_id}
    permissions = "/api/mlflow/api/3.0/mlflow/users/permissions"
    assert as_admin.post(f"{permissions}/grant", json={**grant, "permission": "DENY"}).status_code == 200
    try:
        request = body(run)
        response = as_bob.post(TOKENIZED, json=request)
    finally:
        assert as_admin.post(f"{permissions}/revoke", json=grant).status_code == 200

    assert "may not read it" in assert_error(response, 403, "PERMISSION_DENIED", layer="mlflow")
    assert as_bob.get(f"/api/v1/tokens/{request['token_id']}").status_code == 404


def test_another_users_model_is_403_from_mlflow_and_the_claim_rolls_back(
    as_alice: httpx.Client, as_bob: httpx.Client, as_admin: httpx.Client, bob: User, run: LoggedRun
) -> None:
    alices = body(run)
    assert as_alice.post(TOKENIZED, json=alices).status_code == 201
    bobs = body(run, model_name=alices["model_name"])

    response = as_bob.post(TOKENIZED, json=bobs)

    message = assert_error(response, 403, "PERMISSION_DENIED", layer="mlflow")
    assert f"create a version of model '{alices['model_name']}'" in message
    assert as_bob.get(f"/api/v1/tokens/{bobs['token_id']}").status_code == 404
    events = as_admin.get("/api/v1/audit", params={"actor": bob.owner, "action": "token.claim"}).json()["events"]
    outcomes = [event["outcome"] for event in events if event["target"] == str(bobs["token_id"]).upper()]
    assert outcomes == ["rolled_back", "ok"]


def test_simultaneous_claims_have_exactly_one_winner(platform: LivePlatform, run: LoggedRun) -> None:
    users = [new_user(platform, "racer") for _ in range(RACERS)]
    token_id = unique("race")
    barrier = threading.Barrier(RACERS)

    def claim(user: User) -> httpx.Response:
        with platform.client(user.key) as client:
            request = body(run, token_id=token_id, model_name=unique(user.owner))
            barrier.wait()
            return client.post(TOKENIZED, json=request)

    with ThreadPoolExecutor(RACERS) as pool:
        responses = list(pool.map(claim, users))

    winners = [response for response in responses if response.status_code == 201]
    assert len(winners) == 1, [response.text for response in responses]
    winning_model = winners[0].json()["model_name"]
    for response in responses:
        if response is not winners[0]:
            assert f"claimed by model '{winning_model}'" in assert_error(response, 409, "TOKEN_ALREADY_CLAIMED")


def test_simultaneous_repeats_by_one_owner_create_one_version(
    platform: LivePlatform, alice: User, run: LoggedRun
) -> None:
    request = body(run)
    barrier = threading.Barrier(RACERS)

    def register(_: int) -> httpx.Response:
        with platform.client(alice.key) as client:
            barrier.wait()
            return client.post(TOKENIZED, json=request, headers={"Idempotency-Key": "retry"})

    with ThreadPoolExecutor(RACERS) as pool:
        responses = list(pool.map(register, range(RACERS)))

    assert sorted(response.status_code for response in responses) == [200] * (RACERS - 1) + [201]
    assert {response.json()["version"] for response in responses} == {"1"}


# --- tokens ------------------------------------------------------------------------------------------------------


def test_token_lookup_shows_the_owner_only_to_the_owner_and_admins(
    as_alice: httpx.Client, as_bob: httpx.Client, as_admin: httpx.Client, alice: User, run: LoggedRun
) -> None:
    request = body(run)
    assert as_alice.post(TOKENIZED, json=request).status_code == 201
    path = f"/api/v1/tokens/{str(request['token_id']).lower()}"

    seen = {name: client.get(path).json() for name, client in [("a", as_alice), ("b", as_bob), ("admin", as_admin)]}

    assert {name: info["owner"] for name, info in seen.items()} == {"a": alice.owner, "b": None, "admin": alice.owner}
    assert all(info["model_name"] == request["model_name"] for info in seen.values())
    assert_error(as_bob.get("/api/v1/tokens/never-claimed"), 404, "RESOURCE_DOES_NOT_EXIST")
    assert_error(as_bob.get("/api/v1/tokens/-bad"), 400, "INVALID_PARAMETER_VALUE")


def test_token_lookup_tells_the_owner_when_the_tokens_model_is_gone(
    as_alice: httpx.Client, as_bob: httpx.Client, as_admin: httpx.Client, run: LoggedRun
) -> None:
    """A claim outlives a model deleted through MLflow; the lookup named that model as if it still held the token."""
    request = body(run)
    name, path = str(request["model_name"]), f"/api/v1/tokens/{request['token_id']}"
    assert as_alice.post(TOKENIZED, json=request).status_code == 201

    def carried() -> dict[str, object]:
        return {
            who: c.get(path).json()["model_carries_token"]
            for who, c in [("a", as_alice), ("b", as_bob), ("admin", as_admin)]
        }

    before = carried()
    assert as_alice.request("DELETE", f"{MLFLOW}/registered-models/delete", json={"name": name}).status_code == 200
    after = carried()

    assert before == {"a": True, "b": None, "admin": True}
    assert after == {"a": False, "b": None, "admin": False}
    assert as_alice.get(path).json()["model_name"] == name  # still hers, and still naming where it was


def test_a_new_admin_keys_first_token_lookup_sees_the_model(
    platform: LivePlatform, as_alice: httpx.Client, run: LoggedRun
) -> None:
    """MLflow did not know these owners as admins yet: the lookup saw only their own models and called alice's gone
    (a key made through the API), or failed with a 404 (one made offline, whose owner MLflow had never seen)."""
    request = body(run)
    assert as_alice.post(TOKENIZED, json=request).status_code == 201
    path = f"/api/v1/tokens/{request['token_id']}"
    keys = {
        "api": platform.create_key(platform.unique_owner("new-admin-"), "read,write,admin"),
        "offline": create_key_offline(platform.data_dir, platform.unique_owner("offline-admin-"), "read,write,admin"),
    }

    seen = {}
    for made, key in keys.items():
        with platform.client(key) as as_new_admin:
            answer = as_new_admin.get(path)
        seen[made] = (answer.status_code, answer.json().get("model_carries_token"))

    assert seen == {"api": (200, True), "offline": (200, True)}


def test_admins_transfer_and_release_tokens(
    as_alice: httpx.Client, as_bob: httpx.Client, as_admin: httpx.Client, alice: User, bob: User, run: LoggedRun
) -> None:
    request = body(run)
    assert as_alice.post(TOKENIZED, json=request).status_code == 201
    token_path = f"/api/v1/tokens/{request['token_id']}"
    assert_error(as_bob.post(f"{token_path}/transfer", json={"new_owner": bob.owner}), 403, "PERMISSION_DENIED")
    nobody = as_admin.post(f"{token_path}/transfer", json={"new_owner": unique("nobody")})
    no_model = as_admin.post(f"{token_path}/transfer", json={"new_owner": bob.owner, "model_name": unique("none")})
    assert "an account exists once a key is created for it" in assert_error(nobody, 404, "RESOURCE_DOES_NOT_EXIST")
    twin = as_admin.post(f"{token_path}/transfer", json={"new_owner": bob.owner.upper()})
    malformed = as_admin.post(f"{token_path}/transfer", json={"new_owner": "bob smith"})
    assert assert_error(malformed, 400, "INVALID_PARAMETER_VALUE").startswith("new_owner: must be 1-64")
    assert malformed.json()["field"] == "new_owner"
    assert f"did you mean '{bob.owner}'?" in assert_error(twin, 404, "RESOURCE_DOES_NOT_EXIST")
    assert "to move the token to" in assert_error(no_model, 404, "RESOURCE_DOES_NOT_EXIST", layer="mlflow")
    assert as_admin.get(token_path).json()["owner"] == alice.owner  # a typo moved nothing

    moved = as_admin.post(f"{token_path}/transfer", json={"new_owner": bob.owner})

    assert moved.status_code == 200, moved.text
    assert (moved.json()["owner"], moved.json()["model_name"]) == (bob.owner, request["model_name"])
    # The new owner got MANAGE on the registered model in MLflow, and the token now refuses its former owner.
    by_bob = as_bob.post(TOKENIZED, json={**request, "artifact_path": "legacy"})
    assert (by_bob.status_code, by_bob.json()["version"]) == (201, "2")
    assert_error(as_alice.post(TOKENIZED, json=request), 409, "TOKEN_ALREADY_CLAIMED")
    direct = {"name": request["model_name"], "source": f"models:/{run.model_id}", "model_id": run.model_id}
    assert as_alice.post(f"{MLFLOW}/model-versions/create", json=direct).status_code == 403  # her grant was revoked

    released = as_admin.delete(token_path)

    assert released.status_code == 200 and released.json()["owner"] == bob.owner
    assert_error(as_admin.delete(token_path), 404, "RESOURCE_DOES_NOT_EXIST")
    assert as_bob.get(token_path).status_code == 404
    # Released, the token lists nothing, though its versions keep their tags.
    assert as_bob.get(TOKENIZED, params={"token_id": request["token_id"]}).json()["models"] == []
    events = as_admin.get("/api/v1/audit", params={"actor": "admin", "max_results": 1000}).json()["events"]
    actions = {event["action"] for event in events if event["target"] == str(request["token_id"]).upper()}
    assert {"token.transfer", "token.release"} <= actions


def test_a_transfer_leaves_the_model_to_its_owner_while_they_hold_other_tokens_on_it(
    as_alice: httpx.Client, as_bob: httpx.Client, as_admin: httpx.Client, bob: User, run: LoggedRun
) -> None:
    """Alice's model carries two of her tokens; an admin gives one to bob. Alice must still register under her other
    token, and bob under his (a walkthrough found alice locked out of her own model, 2026-11-29)."""
    kept = body(run)
    given = body(run, model_name=kept["model_name"], artifact_path="legacy")
    assert as_alice.post(TOKENIZED, json=kept).status_code == 201
    assert as_alice.post(TOKENIZED, json=given).status_code == 201

    moved = as_admin.post(f"/api/v1/tokens/{given['token_id']}/transfer", json={"new_owner": bob.owner})

    assert moved.status_code == 200, moved.text
    repeat = as_alice.post(TOKENIZED, json=kept)
    assert (repeat.status_code, repeat.json()["created"]) == (200, False), repeat.text
    assert as_alice.post(TOKENIZED, json={**kept, "artifact_path": "legacy"}).status_code == 201
    assert as_bob.post(TOKENIZED, json={**given, "artifact_path": "model"}).status_code == 201
    events = as_admin.get("/api/v1/audit", params={"action": "token.transfer", "max_results": 1000}).json()["events"]
    (event,) = [event for event in events if event["target"] == str(given["token_id"]).upper()]
    assert event["detail"]["previous_owner_keeps_model_for"] == [str(kept["token_id"]).upper()]


def test_a_transfer_does_not_hand_over_a_namesake_of_the_tokens_deleted_model(
    platform: LivePlatform,
    as_alice: httpx.Client,
    as_bob: httpx.Client,
    as_admin: httpx.Client,
    bob: User,
    run: LoggedRun,
) -> None:
    """Alice's model is gone and carol made one of that name: a transfer gave bob MANAGE on it (security review)."""
    request = body(run)
    name, token_path = str(request["model_name"]), f"/api/v1/tokens/{request['token_id']}"
    assert as_alice.post(TOKENIZED, json=request).status_code == 201
    assert as_alice.request("DELETE", f"{MLFLOW}/registered-models/delete", json={"name": name}).status_code == 200
    with platform.client(new_user(platform, "carol").key) as as_carol:
        assert as_carol.post(f"{MLFLOW}/registered-models/create", json={"name": name}).status_code == 200

    refused = as_admin.post(f"{token_path}/transfer", json={"new_owner": bob.owner})

    assert "Name the model the token should move to" in assert_error(refused, 409, "TOKEN_MODEL_GONE")
    deleting = as_bob.request("DELETE", f"{MLFLOW}/registered-models/delete", json={"name": name})
    assert deleting.status_code == 403  # carol's model stayed hers
    bobs_model = unique("bobs")
    assert as_bob.post(f"{MLFLOW}/registered-models/create", json={"name": bobs_model}).status_code == 200
    named = as_admin.post(f"{token_path}/transfer", json={"new_owner": bob.owner, "model_name": bobs_model})
    assert (named.status_code, named.json()["model_name"]) == (200, bobs_model), named.text


def test_a_transfer_never_hands_over_a_baseline_model(
    as_alice: httpx.Client, as_bob: httpx.Client, as_admin: httpx.Client, bob: User, run: LoggedRun
) -> None:
    """An admin transfer with `model_name` of the shared baselines gave bob MANAGE on them (bad-input probe)."""
    model_type = unique("guarded").lower()
    baseline = f"hokusai-baseline-{model_type}"
    assert as_alice.post(BASELINE, json={"model_type": model_type, "mlflow_run_id": run.run_id}).status_code == 201
    request = body(run)
    assert as_alice.post(TOKENIZED, json=request).status_code == 201
    token_path = f"/api/v1/tokens/{request['token_id']}"

    for name in (baseline, "hokusai-baseline-never-made", baseline.upper()):
        refused = as_admin.post(f"{token_path}/transfer", json={"new_owner": bob.owner, "model_name": name})
        assert "reserved for baselines" in assert_error(refused, 400, "INVALID_PARAMETER_VALUE")
        assert refused.json()["field"] == "model_name"

    assert as_admin.get(token_path).json()["owner"] != bob.owner
    edit = {"name": baseline, "version": "1", "description": "bob was here"}
    assert as_bob.patch(f"{MLFLOW}/model-versions/update", json=edit).status_code == 403


def test_a_version_is_shown_as_tokenized_only_while_its_model_holds_the_token(
    as_alice: httpx.Client, as_bob: httpx.Client, as_admin: httpx.Client, run: LoggedRun
) -> None:
    """The single lookup trusted the version's tag and showed alice's version under bob's token (security review)."""
    request = body(run)
    assert as_alice.post(TOKENIZED, json=request).status_code == 201
    versions = f"{TOKENIZED}/{request['model_name']}/versions"
    assert as_alice.get(f"{versions}/latest").json()["version"] == "1"
    assert as_admin.delete(f"/api/v1/tokens/{request['token_id']}").status_code == 200
    assert as_bob.post(TOKENIZED, json={**request, "model_name": unique("bobs")}).status_code == 201

    single, latest = as_bob.get(f"{versions}/1"), as_bob.get(f"{versions}/latest")

    assert "which that model no longer holds" in assert_error(single, 404, "RESOURCE_DOES_NOT_EXIST")
    assert_error(latest, 404, "RESOURCE_DOES_NOT_EXIST")


def test_a_released_token_cannot_be_claimed_on_a_version_the_caller_may_not_change(
    as_alice: httpx.Client, as_bob: httpx.Client, as_admin: httpx.Client, alice: User, run: LoggedRun
) -> None:
    """Bob re-sending Alice's registration after an admin released her token took her version (security review)."""
    request = body(run)
    assert as_alice.post(TOKENIZED, json=request).status_code == 201
    token_path = f"/api/v1/tokens/{request['token_id']}"
    assert as_admin.delete(token_path).status_code == 200

    taken = as_bob.post(TOKENIZED, json=request)
    unclaimed = as_admin.get(token_path)
    reclaimed = as_alice.post(TOKENIZED, json=request)

    assert_error(taken, 403, "PERMISSION_DENIED", layer="mlflow")
    assert unclaimed.status_code == 404  # bob's claim was rolled back
    assert (reclaimed.status_code, reclaimed.json()["created"], reclaimed.json()["version"]) == (200, False, "1")
    assert as_admin.get(token_path).json()["owner"] == alice.owner


def test_a_claim_moved_off_a_deleted_model_cannot_take_a_version_the_caller_may_not_change(
    platform: LivePlatform,
    as_alice: httpx.Client,
    as_bob: httpx.Client,
    as_admin: httpx.Client,
    bob: User,
    run: LoggedRun,
) -> None:
    """Bob claimed a released token on his own model, deleted it, then re-sent alice's registration (security
    review)."""
    request = body(run)
    assert as_alice.post(TOKENIZED, json=request).status_code == 201
    token_id, bobs_model = str(request["token_id"]).upper(), unique("bobs")
    token_path = f"/api/v1/tokens/{token_id}"
    assert as_admin.delete(token_path).status_code == 200
    assert as_bob.post(TOKENIZED, json={**request, "model_name": bobs_model}).status_code == 201
    deleted = platform.run_python(_DELETE.format(name=bobs_model), platform.mlflow_env(bob.key))
    assert deleted.returncode == 0, deleted.stderr[-3000:]

    taken = as_bob.post(TOKENIZED, json=request)

    assert_error(taken, 403, "PERMISSION_DENIED", layer="mlflow")
    holder = as_admin.get(token_path).json()
    assert (holder["owner"], holder["model_name"]) == (bob.owner, bobs_model)  # moved back where it was
    listed = as_alice.get(TOKENIZED, params={"token_id": token_id}).json()["models"]
    assert listed == []  # alice's version is not bob's token's
    events = as_admin.get("/api/v1/audit", params={"actor": bob.owner, "action": "token.claim"}).json()["events"]
    trail = [(event["outcome"], event["detail"]) for event in events if event["target"] == token_id]
    assert trail[0] == ("rolled_back", {"model_name": request["model_name"], "to_model_name": bobs_model})
    assert trail[1][0] == "moved"


_RENAME = """
import mlflow
client = mlflow.MlflowClient()
client.rename_registered_model({old!r}, {new!r})
print(client.get_registered_model({new!r}).latest_versions[0].tags["hokusai_token_id"])
"""
_DELETE = "import mlflow; mlflow.MlflowClient().delete_registered_model({name!r})"


def test_a_token_follows_its_models_rename_and_its_owner_takes_it_on_once_the_model_is_gone(
    platform: LivePlatform,
    as_alice: httpx.Client,
    as_bob: httpx.Client,
    as_admin: httpx.Client,
    alice: User,
    run: LoggedRun,
) -> None:
    request = body(run)
    assert as_alice.post(TOKENIZED, json=request).status_code == 201
    token_id, renamed = str(request["token_id"]).upper(), unique("renamed")
    token_path = f"/api/v1/tokens/{token_id}"
    listed_before = as_alice.get(TOKENIZED, params={"token_id": token_id}).json()["models"]

    done = platform.run_python(_RENAME.format(old=request["model_name"], new=renamed), platform.mlflow_env(alice.key))

    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1] == token_id
    assert as_alice.get(token_path).json()["model_name"] == renamed
    # The web UI's route, and an admin's rename (whose body the gateway otherwise never reads), are followed too.
    for client, new_name in ((as_alice, unique("by-ui")), (as_admin, unique("by-admin"))):
        moved_by = client.post(
            "/api/mlflow/ajax-api/2.0/mlflow/registered-models/rename", json={"name": renamed, "new_name": new_name}
        )
        assert moved_by.status_code == 200, moved_by.text
        renamed = new_name
        assert as_alice.get(token_path).json()["model_name"] == renamed
    listed = as_alice.get(TOKENIZED, params={"token_id": token_id}).json()["models"]
    assert [(info["model_name"], info["version"]) for info in listed] == [(renamed, "1")]
    assert [(info["model_name"], info["version"]) for info in listed_before] == [(request["model_name"], "1")]
    repeat = as_alice.post(TOKENIZED, json={**request, "model_name": renamed})
    assert (repeat.status_code, repeat.json()["version"]) == (200, "1"), repeat.text
    # While a version carries the token, nobody (its owner included) takes it to another model.
    elsewhere = as_alice.post(TOKENIZED, json={**request, "model_name": unique("other")})
    assert f"claimed by your model '{renamed}'" in assert_error(elsewhere, 409, "TOKEN_ALREADY_CLAIMED")

    deleted = platform.run_python(_DELETE.format(name=renamed), platform.mlflow_env(alice.key))
    assert deleted.returncode == 0, deleted.stderr[-3000:]

    # The model is gone; the claim stays alice's: bob still cannot have the token, alice takes it to a new model.
    by_bob = as_bob.post(TOKENIZED, json={**request, "model_name": unique("bobs")})
    assert f"claimed by model '{renamed}'" in assert_error(by_bob, 409, "TOKEN_ALREADY_CLAIMED")
    successor = unique("successor")
    moved = as_alice.post(TOKENIZED, json={**request, "model_name": successor})
    assert (moved.status_code, moved.json()["model_name"], moved.json()["version"]) == (201, successor, "1")
    holder = as_alice.get(token_path).json()
    assert (holder["model_name"], holder["owner"]) == (successor, alice.owner)
    events = as_admin.get("/api/v1/audit", params={"actor": alice.owner, "max_results": 1000}).json()["events"]
    trail = [(event["action"], event["outcome"]) for event in events if event["target"] == token_id]
    assert ("token.model_renamed", "ok") in trail and ("token.claim", "moved") in trail


def test_a_rename_leaves_a_claim_of_a_deleted_namesake_where_it_is(
    as_alice: httpx.Client, as_bob: httpx.Client, run: LoggedRun
) -> None:
    """Bob's new model took the name of alice's deleted one: renaming it must not carry alice's token along."""
    request = body(run)
    assert as_alice.post(TOKENIZED, json=request).status_code == 201
    name, token_path = request["model_name"], f"/api/v1/tokens/{request['token_id']}"
    assert as_alice.request("DELETE", f"{MLFLOW}/registered-models/delete", json={"name": name}).status_code == 200
    assert as_bob.post(f"{MLFLOW}/registered-models/create", json={"name": name}).status_code == 200

    renamed = as_bob.post(f"{MLFLOW}/registered-models/rename", json={"name": name, "new_name": unique("bobs")})

    assert renamed.status_code == 200, renamed.text
    assert as_alice.get(token_path).json()["model_name"] == name


# --- lookups -------------------------------------------------------------------------------------------------------


def _admin_version(admin: httpx.Client, name: str, tags: dict[str, str], run: LoggedRun) -> None:
    """A model version made with MLflow's own API through the gateway (faster than our checks).

    Only an admin key may write Hokusai's tags there; the gateway refuses them to everyone else.
    """
    version = {"name": name, "source": f"models:/{run.model_id}", "model_id": run.model_id, "run_id": run.run_id}
    version["tags"] = [{"key": key, "value": value} for key, value in tags.items()]
    response = admin.post(f"{MLFLOW}/model-versions/create", json=version)
    assert response.status_code == 200, response.text


def _all_pages(client: httpx.Client, **params: object) -> list[list[dict[str, object]]]:
    pages, page_token = [], None
    while True:
        response = client.get(TOKENIZED, params={**params, **({"page_token": page_token} if page_token else {})})
        assert response.status_code == 200, response.text
        pages.append(response.json()["models"])
        page_token = response.json()["next_page_token"]
        if page_token is None:
            return pages


def test_lookups_page_across_more_than_100_versions_of_the_model_holding_the_token(
    as_alice: httpx.Client, as_admin: httpx.Client, run: LoggedRun
) -> None:
    request = body(run)
    assert as_alice.post(TOKENIZED, json=request).status_code == 201
    model_name, token_id = str(request["model_name"]), str(request["token_id"]).upper()
    tags = {"hokusai_token_id": token_id, "benchmark_metric": "accuracy", "benchmark_value": "0.875"}
    for _ in range(PAGE_VERSIONS - 1):
        _admin_version(as_admin, model_name, tags, run)
    # A version carrying the token but not the benchmark tags is not a tokenized model, and is skipped.
    _admin_version(as_admin, model_name, {"hokusai_token_id": token_id}, run)
    # Another model tagged with the token does not hold it: the token registry, not a tag, decides.
    stray = unique("stray")
    assert as_admin.post(f"{MLFLOW}/registered-models/create", json={"name": stray}).status_code == 200
    _admin_version(as_admin, stray, tags, run)

    default_pages = _all_pages(as_alice, token_id=token_id)
    small_pages = _all_pages(as_alice, token_id=token_id, max_results=40)

    assert [len(page) for page in default_pages] == [100, PAGE_VERSIONS - 100]
    assert [len(page) for page in small_pages] == [40, 40, PAGE_VERSIONS - 80]
    for pages in (default_pages, small_pages):
        listed = [(model["model_name"], model["version"]) for page in pages for model in page]
        assert listed == [(model_name, str(number)) for number in range(1, PAGE_VERSIONS + 1)]
    everything = as_alice.get(TOKENIZED, params={"max_results": 1000}).json()["models"]
    names = {model["model_name"] for model in everything}
    assert model_name in names and stray not in names
    assert not any(name.startswith("hokusai-baseline-") for name in names)


def test_owner_filter_and_version_lookup(
    as_admin: httpx.Client, as_bob: httpx.Client, bob: User, platform: LivePlatform, run: LoggedRun
) -> None:
    carol = new_user(platform, "carol")
    with platform.client(carol.key) as as_carol:
        registered = [as_carol.post(TOKENIZED, json=body(run)).json() for _ in range(3)]
        again = as_carol.post(TOKENIZED, json={**body(run), "model_name": registered[0]["model_name"],
                                               "token_id": "extra-" + uuid.uuid4().hex[:6]})  # fmt: skip
        own_pages = _all_pages(as_carol, owner=carol.owner, max_results=2)
    assert again.status_code == 201

    admin_pages = _all_pages(as_admin, owner=carol.owner, max_results=2)
    # Who holds a token is the holder's and the admins' to know, as GET /api/v1/tokens/{id} shows it.
    probed = as_bob.get(TOKENIZED, params={"owner": carol.owner, "token_id": registered[0]["token_id"]})

    for pages in (own_pages, admin_pages):
        assert [len(page) for page in pages] == [2, 2]
        assert sorted(model["model_name"] for page in pages for model in page) == sorted(
            [item["model_name"] for item in registered] + [registered[0]["model_name"]]
        )
    assert_error(probed, 403, "PERMISSION_DENIED")
    assert f"list your own with owner={bob.owner}" in probed.json()["message"]
    assert _all_pages(as_admin, owner=unique("nobody")) == [[]]
    name = registered[0]["model_name"]
    latest = as_bob.get(f"{TOKENIZED}/{name}/versions/latest")
    first = as_bob.get(f"{TOKENIZED}/{name}/versions/1")
    assert (latest.json()["version"], first.json()["version"]) == ("2", "1")
    assert first.json()["token_id"] == registered[0]["token_id"]
    assert_error(as_bob.get(f"{TOKENIZED}/{name}/versions/99"), 404, "RESOURCE_DOES_NOT_EXIST", layer="mlflow")


def test_an_owner_with_more_models_than_one_mlflow_filter_can_name_lists_them_all(
    as_admin: httpx.Client, platform: LivePlatform, run: LoggedRun
) -> None:
    # Names that MLflow's filter must spell out long (each é is written \xe9): ten of them outgrow one search filter.
    erin = new_user(platform, "erin")
    names = sorted(unique(f"{index}") + "-" + "\u00e9" * 230 for index in range(10))
    with platform.client(erin.key) as as_erin:
        for name in names:
            assert as_erin.post(TOKENIZED, json=body(run, model_name=name)).status_code == 201, name
        own_pages = _all_pages(as_erin, owner=erin.owner, max_results=3)
        own_default = _all_pages(as_erin, owner=erin.owner)
    admin_pages = _all_pages(as_admin, owner=erin.owner, max_results=4)

    for pages, size in ((own_pages, 3), (own_default, 100), (admin_pages, 4)):
        assert [model["model_name"] for page in pages for model in page] == names
        assert all(len(page) <= size for page in pages)
    assert len(own_default) > 1  # the listing crossed from one slice of erin's models to the next


# --- audit ---------------------------------------------------------------------------------------------------------


def test_audit_is_admin_only_filtered_and_paged(
    as_alice: httpx.Client, as_admin: httpx.Client, alice: User, run: LoggedRun
) -> None:
    assert as_alice.post(TOKENIZED, json=body(run)).status_code == 201
    assert_error(as_alice.get("/api/v1/audit"), 403, "PERMISSION_DENIED")

    claims = as_admin.get("/api/v1/audit", params={"actor": alice.owner, "action": "token.claim"}).json()["events"]
    first_page = as_admin.get("/api/v1/audit", params={"actor": alice.owner, "max_results": 1}).json()
    second_page = as_admin.get(
        "/api/v1/audit", params={"actor": alice.owner, "max_results": 1, "page_token": first_page["next_page_token"]}
    ).json()
    later = as_admin.get("/api/v1/audit", params={"actor": alice.owner, "since": claims[0]["at"]}).json()["events"]

    assert claims and all((e["actor"], e["action"]) == (alice.owner, "token.claim") for e in claims)
    assert len(first_page["events"]) == 1 and first_page["next_page_token"]
    assert second_page["events"][0]["id"] < first_page["events"][0]["id"]
    newest_claim = datetime.fromisoformat(claims[0]["at"])
    assert later and all(datetime.fromisoformat(event["at"]) >= newest_claim for event in later)
    denials = as_admin.get("/api/v1/audit", params={"actor": alice.owner, "action": "permission.denied"}).json()
    assert denials["events"][0]["target"] == "GET /api/v1/audit"


# --- the schema ----------------------------------------------------------------------------------------------

REGISTRY_OPERATIONS = [
    ("POST", "/api/v1/models/tokenized"),
    ("GET", "/api/v1/models/tokenized"),
    ("GET", "/api/v1/models/tokenized/{model_name}/versions/{version}"),
    ("POST", "/api/v1/models/baseline"),
    ("GET", "/api/v1/models/baseline"),
    ("GET", "/api/v1/tokens/{token_id}"),
    ("POST", "/api/v1/tokens/{token_id}/transfer"),
    ("DELETE", "/api/v1/tokens/{token_id}"),
    ("GET", "/api/v1/audit"),
]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


@pytest.fixture(scope="module")
def registry_schema(platform: LivePlatform) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_url(platform.url + "/openapi.json")
    return schema.include(path_regex=r"^/api/v1/(models|tokens|audit)")


def test_the_openapi_document_lists_the_errors_the_api_sends(platform: LivePlatform, as_alice: httpx.Client) -> None:
    document = httpx.get(platform.url + "/openapi.json", timeout=30.0).json()
    statuses = {status for path in document["paths"].values() for op in path.values() for status in op["responses"]}
    # Validation errors are 400s in the envelope, never FastAPI's 422, so a generated client expects what it gets.
    assert "422" not in statuses and "HTTPValidationError" not in document["components"]["schemas"]
    assert "field" in document["components"]["schemas"]["ErrorBody"]["properties"]
    # The probes answer HEAD too; one route for both methods gave two operations one operationId (a server warning,
    # and a document that client generators refuse).
    operation_ids = [op["operationId"] for path in document["paths"].values() for op in path.values()]
    assert len(operation_ids) == len(set(operation_ids))
    assert [httpx.head(platform.url + probe).status_code for probe in ("/health", "/ready")] == [200, 200]
    refused = as_alice.get(TOKENIZED, params={"max_results": 0})
    assert assert_error(refused, 400, "INVALID_PARAMETER_VALUE").startswith("Invalid request: query.max_results")
    assert refused.json()["field"] == "max_results"


def test_the_openapi_document_says_which_operations_need_a_key_and_how_to_send_it(platform: LivePlatform) -> None:
    document = httpx.get(platform.url + "/openapi.json", timeout=30.0).json()
    schemes = document["components"]["securitySchemes"]
    assert {(scheme["type"], scheme.get("scheme") or scheme["name"]) for scheme in schemes.values()} == {
        ("http", "bearer"),
        ("http", "basic"),
        ("apiKey", "X-API-Key"),
    }
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            needs_key = bool(operation.get("security"))
            concrete = path.replace("{token_id}", "SOMETOKEN").replace("{key_id}", "key_0").replace("{version}", "1")
            concrete = concrete.replace("{model_name}", "some-model")
            # Without a key: a 401 exactly where the document says a key is needed.
            answer = httpx.request(method.upper(), platform.url + concrete, timeout=30.0)
            assert (answer.status_code == 401) == needs_key, (method, path, answer.status_code)
            assert needs_key == path.startswith("/api/v1/"), path


def test_a_source_that_resolves_past_mlflows_500_characters_is_a_400_before_anything_is_claimed(
    as_alice: httpx.Client, run: LoggedRun
) -> None:
    folder = "/".join(["d" * 49] * 9)  # 449 characters: the URI fits in 500, the run's artifact location plus it not
    artifact = f"/api/mlflow/api/2.0/mlflow-artifacts/artifacts/{run.experiment_id}/{run.run_id}/artifacts/{folder}"
    assert as_alice.put(artifact + "/MLmodel", content=b"flavors: {}\n").status_code == 200
    request = body(run, mlflow_run_id=None, model_uri=f"runs:/{run.run_id}/{folder}")
    assert len(str(request["model_uri"])) <= 500

    refused = as_alice.post(TOKENIZED, json={k: v for k, v in request.items() if v is not None})

    assert "characters; MLflow keeps at most 500" in assert_error(refused, 400, "INVALID_PARAMETER_VALUE")
    assert refused.json()["field"] == "model_uri"
    assert as_alice.get(f"/api/v1/tokens/{request['token_id']}").status_code == 404


def test_json_python_cannot_build_is_a_400_that_says_why(as_alice: httpx.Client) -> None:
    headers = {"Content-Type": "application/json"}
    for body in (
        ("[" * 100_000 + "]" * 100_000).encode(),
        ('{"baseline_value": 1' + "0" * 5000 + "}").encode(),
        b'{"model_name": "\xff"}',
    ):
        refused = as_alice.post(TOKENIZED, content=body, headers=headers)
        assert "is not UTF-8, nests too deeply, or holds a number with too many digits" in assert_error(
            refused, 400, "INVALID_PARAMETER_VALUE"
        )


def test_every_registry_route_is_fuzzed(registry_schema: schemathesis.BaseSchema) -> None:
    operations = [result.ok() for result in registry_schema.get_all_operations()]

    assert sorted((operation.method.upper(), operation.path) for operation in operations) == sorted(REGISTRY_OPERATIONS)


# Negative data needs a constrained input: a route whose only parameter is a free string has none to violate.
FUZZ_CASES = [(method, path, schemathesis.GenerationMode.POSITIVE) for method, path in REGISTRY_OPERATIONS] + [
    (method, path, schemathesis.GenerationMode.NEGATIVE)
    for method, path in REGISTRY_OPERATIONS
    if method == "POST" or path in (TOKENIZED, BASELINE, "/api/v1/audit")
]


# schemathesis' own pytest integration (`from_fixture`) fails on pytest 9, so its strategies drive hypothesis here.
@pytest.mark.parametrize(("method", "path", "mode"), FUZZ_CASES)
def test_registry_routes_never_fail_and_match_their_schema(
    registry_schema: schemathesis.BaseSchema,
    platform: LivePlatform,
    method: str,
    path: str,
    mode: schemathesis.GenerationMode,
) -> None:
    operation = registry_schema[path][method]
    headers = {"Authorization": f"Bearer {platform.admin_key}"}

    @settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def call_and_validate(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=platform.url, headers=headers, checks=CHECKS)

    call_and_validate()
