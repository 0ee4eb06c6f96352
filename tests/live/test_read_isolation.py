"""`HOKUSAI_MLFLOW_DEFAULT_PERMISSION=NO_PERMISSIONS`: users cannot read each other's work, through the stock client.

docs/architecture.md ("What MLflow's permission model still shows") promises it: searches omit other users'
resources, and a read of one is refused with a message that says why.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from tests.support.platform import LivePlatform, start_platform
from tests.support.sdk_live import log_run, new_user, unique

MLFLOW = "/api/mlflow/api/2.0/mlflow"
GRANT = "/api/mlflow/api/3.0/mlflow/users/permissions/grant"
TOKENIZED = "/api/v1/models/tokenized"
_STOCK_CLIENT_VIEW = """
import json, mlflow
names = [experiment.name for experiment in mlflow.search_experiments()]
try:
    mlflow.get_experiment({experiment_id!r})
    refusal = None
except mlflow.exceptions.MlflowException as exc:
    refusal = exc.message
print(json.dumps({{"names": names, "refusal": refusal}}))
"""


@pytest.fixture(scope="module")
def isolated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivePlatform]:
    live = start_platform(
        tmp_path_factory.mktemp("isolated") / "data", HOKUSAI_MLFLOW_DEFAULT_PERMISSION="NO_PERMISSIONS"
    )
    try:
        yield live
    finally:
        live.stop()


def test_other_users_experiments_are_hidden_and_a_refused_read_says_why(isolated: LivePlatform) -> None:
    alice, bob = new_user(isolated, "alice"), new_user(isolated, "bob")
    name = f"private-{uuid.uuid4().hex[:8]}"
    with isolated.client(alice.key) as as_alice:
        created = as_alice.post(f"{MLFLOW}/experiments/create", json={"name": name})
        assert created.status_code == 200, created.text
        experiment_id = created.json()["experiment_id"]
        assert as_alice.get(f"{MLFLOW}/experiments/get", params={"experiment_id": experiment_id}).status_code == 200

    script = _STOCK_CLIENT_VIEW.format(experiment_id=experiment_id)
    seen_by_bob = isolated.run_python(script, isolated.mlflow_env(bob.key))
    seen_by_alice = isolated.run_python(script, isolated.mlflow_env(alice.key))

    assert seen_by_bob.returncode == 0 and seen_by_alice.returncode == 0, seen_by_bob.stderr + seen_by_alice.stderr
    bob_view = json.loads(seen_by_bob.stdout.strip().splitlines()[-1])
    alice_view = json.loads(seen_by_alice.stdout.strip().splitlines()[-1])
    assert name not in bob_view["names"] and name in alice_view["names"]
    assert alice_view["refusal"] is None
    assert f"MLflow refused this to user '{bob.owner}'" in bob_view["refusal"]
    assert "this one is not open to other users" in bob_view["refusal"]


def test_a_version_readable_without_its_run_registers_with_a_warning_not_a_refusal(isolated: LivePlatform) -> None:
    """Bob may read alice's model (granted) but not her experiment: its run is hers, the version's source is not."""
    alice, bob = new_user(isolated, "alice"), new_user(isolated, "bob")
    run = log_run(isolated, alice)
    model = unique("shared")
    with isolated.client(alice.key) as as_alice:
        registered = as_alice.post(TOKENIZED, json={"mlflow_run_id": run.run_id, "model_name": model,
                                                    "token_id": unique("iso"), "metric_name": "accuracy",
                                                    "baseline_value": 0.93})  # fmt: skip
        assert registered.status_code == 201, registered.text
    with isolated.client(isolated.admin_key) as admin:
        grant = {"username": bob.owner, "resource_type": "registered_model", "resource_id": model, "permission": "READ"}
        assert admin.post(GRANT, json=grant).status_code == 200

    request = {"model_uri": f"models:/{model}/1", "model_name": unique("bobs"), "token_id": unique("iso"),
               "metric_name": "accuracy", "baseline_value": 0.93}  # fmt: skip
    with isolated.client(bob.key) as as_bob:
        lenient = as_bob.post(TOKENIZED, json=request)
        strict = as_bob.post(TOKENIZED, json=request | {"model_name": unique("strict"), "strict": True})

    assert lenient.status_code == 201, lenient.text
    assert lenient.json()["warnings"] == [
        f"run '{run.run_id}' of the source could not be read, so no logged metric confirms the baseline"
    ]
    assert lenient.json()["tags"]["mlflow_run_id"] == run.run_id
    assert strict.status_code == 400 and "(strict mode)" in strict.json()["message"], strict.text
