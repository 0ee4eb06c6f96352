"""New runs, logged models and datasets are recorded as their authenticated owner's, whatever the client claims
(architecture.md, "`run.user_id`").

MLflow keeps any `user_id` and `mlflow.user` tag a client sends; the stock client sends the local OS user. Both run
creation calls go through the gateway's rewrite: the plain one and the web UI's prompt-lab one.
"""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support.platform import LivePlatform
from tests.support.sdk_live import User, new_user, unique

pytestmark = pytest.mark.live

MLFLOW = "/api/mlflow/api/2.0/mlflow"
PROMPTLAB = "/api/mlflow/ajax-api/2.0/mlflow/runs/create-promptlab-run"


@pytest.fixture(scope="module")
def alice(platform: LivePlatform) -> User:
    return new_user(platform, "alice")


@pytest.fixture(scope="module")
def experiment_id(platform: LivePlatform, alice: User) -> str:
    with platform.client(alice.key) as as_alice:
        created = as_alice.post(f"{MLFLOW}/experiments/create", json={"name": unique("attribution")})
    assert created.status_code == 200, created.text
    return str(created.json()["experiment_id"])


def _recorded(client: httpx.Client, run_id: str) -> tuple[str, dict[str, str]]:
    """The run's `user_id` and its tags, as MLflow stored them."""
    run = client.get(f"{MLFLOW}/runs/get", params={"run_id": run_id}).json()["run"]
    return run["info"]["user_id"], {tag["key"]: tag["value"] for tag in run["data"].get("tags", [])}


@pytest.mark.parametrize("double_encoded", [False, True], ids=["json", "json-in-a-json-string"])
def test_a_run_claimed_for_someone_else_is_recorded_as_its_creators(
    platform: LivePlatform, alice: User, experiment_id: str, double_encoded: bool
) -> None:
    claim = {
        "experiment_id": experiment_id,
        "user_id": "bob",
        "tags": [{"key": "mlflow.user", "value": "bob"}, {"key": "team", "value": "growth"}],
    }
    content = json.dumps(json.dumps(claim)) if double_encoded else json.dumps(claim)
    with platform.client(alice.key) as as_alice:
        created = as_alice.post(f"{MLFLOW}/runs/create", content=content, headers={"Content-Type": "application/json"})
        assert created.status_code == 200, created.text
        run_id = created.json()["run"]["info"]["run_id"]

        user_id, tags = _recorded(as_alice, run_id)

    assert (user_id, tags["mlflow.user"]) == (alice.owner, alice.owner)
    assert tags["team"] == "growth"  # other tags go through untouched


def test_a_prompt_lab_run_is_recorded_as_its_creators(platform: LivePlatform, alice: User, experiment_id: str) -> None:
    claim = {
        "experiment_id": experiment_id,
        "user_id": "bob",
        "prompt_template": "Say {{ word }}",
        "prompt_parameters": [{"key": "word", "value": "hello"}],
        "model_route": "route",
        "model_input": "Say hello",
        "mlflow_version": "3.17.2",
    }
    with platform.client(alice.key) as as_alice:
        created = as_alice.post(PROMPTLAB, json=claim)
        assert created.status_code == 200, created.text

        user_id, _tags = _recorded(as_alice, created.json()["run"]["info"]["run_id"])

    assert user_id == alice.owner


DATASETS = "/api/mlflow/api/3.0/mlflow/datasets"


def test_logged_models_and_datasets_made_by_the_stock_client_are_recorded_as_their_creators(
    platform: LivePlatform, alice: User, experiment_id: str
) -> None:
    """The stock client tags both with the local OS user, which MLflow takes as their creator."""
    script = f"""
import json, mlflow
from mlflow.genai.datasets import create_dataset
model = mlflow.initialize_logged_model(name="attributed", experiment_id="{experiment_id}")
dataset = create_dataset(name="{unique("attributed")}", experiment_id="{experiment_id}")
print(json.dumps([model.tags.get("mlflow.user"), dataset.created_by, dataset.tags.get("mlflow.user")]))
"""
    env = {**platform.mlflow_env(alice.key), "USER": "mallory", "LOGNAME": "mallory"}
    result = platform.run_python(script, env)
    assert result.returncode == 0, result.stderr

    assert json.loads(result.stdout.strip().splitlines()[-1]) == [alice.owner] * 3


@pytest.mark.parametrize(
    "claimed", [{"mlflow.user": "bob", "team": "growth"}, None, "null"], ids=["claimed", "unsaid", "json-null"]
)
def test_a_dataset_is_recorded_as_its_creators_whatever_its_tags_say(
    platform: LivePlatform, alice: User, experiment_id: str, claimed: dict[str, str] | str | None
) -> None:
    body: dict[str, object] = {"name": unique("dataset"), "experiment_ids": [experiment_id]}
    if claimed is not None:
        body["tags"] = claimed if isinstance(claimed, str) else json.dumps(claimed)
    with platform.client(alice.key) as as_alice:
        created = as_alice.post(f"{DATASETS}/create", json=body)
        assert created.status_code == 200, created.text
        dataset = as_alice.get(f"{DATASETS}/{created.json()['dataset']['dataset_id']}").json()["dataset"]

    assert dataset["created_by"] == alice.owner
    tags = json.loads(dataset["tags"])
    assert tags["mlflow.user"] == alice.owner
    assert tags.get("team") == (claimed.get("team") if isinstance(claimed, dict) else None)  # others go through


@pytest.mark.parametrize(
    "tags",
    [[{"key": "mlflow.user", "value": "bob"}, {"key": "team", "value": "growth"}], None],
    ids=["claimed", "unsaid"],
)
def test_a_logged_model_is_tagged_with_its_creator_whatever_it_claims(
    platform: LivePlatform, alice: User, experiment_id: str, tags: list[dict[str, str]] | None
) -> None:
    """A logged model has no creator field: its `mlflow.user` tag is the only record, so the gateway always sets it."""
    body: dict[str, object] = {"experiment_id": experiment_id, "name": "attributed"}
    if tags is not None:
        body["tags"] = tags
    with platform.client(alice.key) as as_alice:
        created = as_alice.post(f"{MLFLOW}/logged-models", json=body)
        assert created.status_code == 200, created.text
        model = as_alice.get(f"{MLFLOW}/logged-models/{created.json()['model']['info']['model_id']}").json()["model"]

    recorded = {tag["key"]: tag["value"] for tag in model["info"].get("tags", [])}
    assert recorded["mlflow.user"] == alice.owner
    assert recorded.get("team") == ("growth" if tags else None)
