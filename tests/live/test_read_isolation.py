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
from tests.support.sdk_live import new_user

MLFLOW = "/api/mlflow/api/2.0/mlflow"
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
    assert "on this platform others may not read them" in bob_view["refusal"]
