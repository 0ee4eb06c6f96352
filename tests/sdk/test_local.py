"""Mock mode against a real local MLflow SQLite store, with sockets refused."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from hokusai import ModelRegistry, TokenizedModel
from hokusai.errors import (
    HokusaiConflictError,
    HokusaiNotFoundError,
    HokusaiRegistrationWarning,
    HokusaiValidationError,
)
from hokusai.validation import TAG_BASELINE, TAG_METRIC, TAG_RUN_ID, TAG_STATUS, TAG_TOKEN_ID, token_not_held

EXAMPLE = Path(__file__).parents[2] / "examples" / "quickstart.py"
RUN_ID = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch, mock_store: Path, no_network: None) -> ModelRegistry:
    monkeypatch.setenv("HOKUSAI_MOCK_MODE", "true")
    return ModelRegistry()


def _register(registry: ModelRegistry, **overrides: object) -> TokenizedModel:
    arguments: dict[str, object] = {
        "model_uri": "s3://bucket/churn",
        "model_name": "churn",
        "token_id": "churn",
        "metric_name": "accuracy",
        "baseline_value": 0.91,
    } | overrides
    return registry.register_tokenized_model(**arguments)  # type: ignore[arg-type]


def test_mock_mode_needs_no_key_and_reports_its_store(registry: ModelRegistry, mock_store: Path) -> None:
    assert registry.mode == "mock"
    assert repr(registry) == f"ModelRegistry(mode='mock', url='sqlite:///{mock_store}/mlflow.db', api_key='**********')"


def test_register_creates_a_tagged_version(registry: ModelRegistry) -> None:
    model = _register(registry, tags={"team": "growth"}, primary_metric="accuracy", description="first")
    assert (model.model_name, model.version, model.token_id, model.created) == ("churn", "1", "CHURN", True)
    assert (model.model_uri, model.source, model.run_id, model.warnings) == (
        "models:/churn/1",
        "s3://bucket/churn",
        None,
        ("the source has no run, so no logged metric confirms the baseline 0.91",),  # as the server words it
    )
    assert model.tags == {
        TAG_TOKEN_ID: "CHURN",
        TAG_METRIC: "accuracy",
        TAG_BASELINE: "0.91",
        TAG_STATUS: "registered",
        "team": "growth",
        "hokusai.primary_metric": "accuracy",
    }
    stored = registry.local.client.get_model_version("churn", "1")
    assert stored.description == "first"


def test_the_same_registration_again_is_idempotent(registry: ModelRegistry) -> None:
    first = _register(registry)
    again = _register(registry)
    assert (again.version, again.created) == (first.version, False)
    assert _register(registry, model_uri="s3://bucket/churn-v2").version == "2"


def test_a_repeat_says_which_of_its_tags_and_description_it_did_not_apply(registry: ModelRegistry) -> None:
    _register(registry, tags={"team": "growth", "epochs": 3}, description="first")

    again = _register(registry, tags={"team": "search", "epochs": 3}, description="second")

    assert again.created is False
    assert again.warnings[-1].startswith(
        "Model 'churn' version 1 already holds this registration, and a repeat changes nothing: "
        "this request's tag 'team' and description differ from the version's and were not applied."
    )
    stored = registry.local.client.get_model_version("churn", "1")
    assert (stored.tags["team"], stored.description) == ("growth", "first")
    assert _register(registry, tags={"team": "growth"}).warnings == ()  # what it has, or nothing said, is no change
    assert (
        _register(registry, description="third")
        .warnings[-1]
        .endswith(
            "this request's description differs from the version's and was not applied. Change them in MLflow "
            "(MlflowClient.set_model_version_tag, update_model_version)."
        )
    )


def test_a_repeat_with_another_baseline_is_refused_not_dropped(registry: ModelRegistry) -> None:
    first = _register(registry)
    with pytest.raises(HokusaiConflictError) as caught:
        _register(registry, baseline_value=first.baseline_value + 0.1)
    assert caught.value.error_code == "REGISTRATION_CONFLICT"
    assert f"with metric '{first.metric_name}' and baseline {first.baseline_value!r}" in str(caught.value)
    assert str(caught.value).endswith("repeat the original values, or register a new version from a new run.")
    assert caught.value.hint is None  # the message says what to do
    stored = registry.local.client.get_model_version("churn", "1")
    assert stored.tags[TAG_BASELINE] == repr(first.baseline_value)


def test_a_token_belongs_to_one_model(registry: ModelRegistry) -> None:
    _register(registry)
    with pytest.raises(HokusaiConflictError) as caught:
        _register(registry, model_name="other")
    assert str(caught.value) == (
        "409 TOKEN_ALREADY_CLAIMED from local: Token 'CHURN' is already claimed by your model 'churn'. A token belongs "
        "to one model: register new versions under 'churn', or choose another token id."
    )


def test_get_token_answers_from_the_local_claims(registry: ModelRegistry) -> None:
    _register(registry)
    held = registry.get_token("churn")
    assert (held.token_id, held.model_name, held.owner) == ("CHURN", "churn", registry.whoami()["owner"])
    assert held.model_carries_token is True
    with pytest.raises(HokusaiNotFoundError) as free:
        registry.get_token("free")
    assert str(free.value) == (
        "404 RESOURCE_DOES_NOT_EXIST from local: Token 'FREE' is not claimed. (HINT: no model holds this token: "
        "check its spelling, or claim it by registering a model with it)"
    )


def test_a_run_missing_from_the_store_is_a_warning_or_with_strict_not_found(registry: ModelRegistry) -> None:
    model = _register(registry, model_uri=f"runs:/{RUN_ID}/model")
    assert model.run_id == RUN_ID
    assert model.tags[TAG_RUN_ID] == RUN_ID
    assert model.warnings == (
        f"run '{RUN_ID}' is not in the local MLflow store ({registry.local.tracking_uri}), so its metric was not "
        "compared with the baseline here; the API compares it when the registration reaches it (`hokusai sync`)",
    )
    with pytest.raises(HokusaiNotFoundError, match=f"Run with id={RUN_ID} not found"):
        _register(registry, model_uri=f"runs:/{RUN_ID}/other", strict=True)


def test_the_runs_metric_is_checked_against_the_baseline_as_the_server_does(registry: ModelRegistry) -> None:
    client = registry.local.client
    run = client.create_run(client.create_experiment("e"))
    client.log_metric(run.info.run_id, "accuracy", 0.91)
    model = _register(registry, model_uri=f"runs:/{run.info.run_id}/model")
    assert model.warnings == ()
    assert _register(registry, model_uri=f"runs:/{run.info.run_id}/m1", baseline_value=0.5).warnings == (
        f"metric 'accuracy' of run '{run.info.run_id}' is 0.91, not the baseline 0.5",
    )
    assert _register(registry, model_uri=f"runs:/{run.info.run_id}/m2", metric_name="f1").warnings == (
        f"run '{run.info.run_id}' has no metric 'f1' to confirm the baseline 0.91",
    )
    with pytest.raises(HokusaiValidationError) as caught:
        _register(registry, model_uri=f"runs:/{run.info.run_id}/m3", metric_name="f1", strict=True)
    assert caught.value.field == "metric_name"  # what to fix: the run has no such metric
    assert str(caught.value).endswith("to confirm the baseline 0.91 (strict mode)")


def test_a_registrations_warnings_are_python_warnings_too(registry: ModelRegistry) -> None:
    """A caveat only in `result.warnings` goes unseen by code that ignores the result; Python shows a warning."""
    client = registry.local.client
    run = client.create_run(client.create_experiment("warned"))
    client.log_metric(run.info.run_id, "accuracy", 0.91)
    with warnings.catch_warnings():
        warnings.simplefilter("error", HokusaiRegistrationWarning)
        _register(registry, model_uri=f"runs:/{run.info.run_id}/model")  # the baseline matches: nothing to say

    with pytest.warns(HokusaiRegistrationWarning) as caught:
        model = _register(registry, model_uri=f"runs:/{run.info.run_id}/m1", baseline_value=0.5)
    with pytest.warns(HokusaiRegistrationWarning) as caught_again:
        entry = registry.register_baseline_via_api("clf", RUN_ID, {"dataset": "v1"})
        entry = registry.register_baseline_via_api("clf", RUN_ID, {"dataset": "v2"})

    assert [str(warning.message) for warning in caught] == list(model.warnings) != []
    assert [str(warning.message) for warning in caught_again] == list(entry.warnings) != []
    assert {warning.filename for warning in (*caught, *caught_again)} == {__file__}  # pointing at the caller's line


def test_a_logged_model_source_is_checked_against_its_run(registry: ModelRegistry) -> None:
    client = registry.local.client
    experiment_id = client.create_experiment("logged")
    run = client.create_run(experiment_id)
    client.log_metric(run.info.run_id, "accuracy", 0.91)
    logged = client.create_logged_model(experiment_id, name="model", source_run_id=run.info.run_id)

    model = _register(registry, model_uri=f"models:/{logged.model_id}", baseline_value=0.5)

    assert model.run_id == run.info.run_id
    assert model.warnings == (f"metric 'accuracy' of run '{run.info.run_id}' is 0.91, not the baseline 0.5",)
    strict = {"token_id": "other", "model_name": "other", "baseline_value": 0.5, "strict": True}
    with pytest.raises(HokusaiValidationError, match="strict mode"):
        _register(registry, model_uri=f"models:/{logged.model_id}", **strict)


def test_baselines_are_listed_by_type_then_version(registry: ModelRegistry) -> None:
    registry.register_baseline_via_api("clf", RUN_ID)
    registry.register_baseline_via_api("Clf", RUN_ID, artifact_path="challenger")  # one series, whatever the case
    registry.register_baseline_via_api("asr", RUN_ID, {"dataset": "v1"})
    _register(registry)  # a tokenized model is no baseline

    everything = registry.list_baselines()
    classifiers = registry.list_baselines("CLF")

    assert [(entry.model_type, entry.version, entry.created) for entry in everything] == [
        ("asr", "1", False), ("clf", "1", False), ("clf", "2", False),
    ]  # fmt: skip
    assert classifiers == everything[1:]
    assert {entry.run_id for entry in everything} == {RUN_ID}
    assert everything[0].tags["metadata"] == '{"dataset":"v1"}'
    assert registry.list_baselines("nlp") == []


@pytest.mark.parametrize("model_name", ["o'brien", 'say "hi"', "back\\slash", "naïve-模型", "x' OR name LIKE '%"])
def test_a_model_name_with_quotes_or_escapes_is_found_by_its_own_filter(
    registry: ModelRegistry, model_name: str
) -> None:
    """The local store compares names in MLflow's filter as the API does (`filter_in`), with no full scan."""
    _register(registry, model_name="other")  # a model the filter must not match
    _register(registry, model_name=model_name, token_id="quoted")
    _register(registry, model_name=model_name, token_id="quoted", model_uri="s3://bucket/churn-v2")
    assert registry.get_tokenized_model(model_name).version == "2"
    assert registry.get_token("quoted").model_carries_token is True


def test_get_latest_and_specific_versions(registry: ModelRegistry) -> None:
    _register(registry)
    _register(registry, model_uri="s3://bucket/churn-v2", baseline_value=0.93)
    latest = registry.get_tokenized_model("churn")
    assert (latest.version, latest.baseline_value, latest.created) == ("2", 0.93, False)
    assert registry.get_tokenized_model("churn", 1).source == "s3://bucket/churn"


def test_get_missing_models(registry: ModelRegistry) -> None:
    with pytest.raises(HokusaiNotFoundError) as caught:
        registry.get_tokenized_model("nope")
    assert (caught.value.status, caught.value.layer) == (404, "local")
    _register(registry)
    with pytest.raises(HokusaiNotFoundError):
        registry.get_tokenized_model("churn", 9)


def test_a_plain_model_version_is_not_a_tokenized_model(registry: ModelRegistry) -> None:
    registry.local.client.create_registered_model("plain")
    registry.local.client.create_model_version("plain", source="s3://x")
    with pytest.raises(HokusaiNotFoundError, match="No tokenized model 'plain': no token is bound to a model of that"):
        registry.get_tokenized_model("plain")
    with pytest.raises(HokusaiNotFoundError, match="No tokenized model 'plain'"):
        registry.get_tokenized_model("plain", 1)


def test_a_token_tag_the_model_does_not_hold_binds_nothing_as_on_the_server(registry: ModelRegistry) -> None:
    _register(registry)  # churn holds CHURN
    registry.local.client.create_registered_model("copycat")
    registry.local.client.create_model_version("copycat", source="s3://x", tags={TAG_TOKEN_ID: "CHURN"})  # by hand

    with pytest.raises(HokusaiNotFoundError, match="No tokenized model 'copycat'"):
        registry.get_tokenized_model("copycat")
    with pytest.raises(HokusaiNotFoundError) as tagged_by_hand:
        registry.get_tokenized_model("copycat", 1)
    assert tagged_by_hand.value.user_message == token_not_held("copycat", "1", "CHURN")
    assert registry.get_tokenized_model("churn").token_id == "CHURN"


def test_latest_is_the_newest_tokenized_version_as_on_the_server(registry: ModelRegistry) -> None:
    _register(registry)
    registry.local.client.create_model_version("churn", source="s3://bucket/plain")  # version 2, no token

    assert registry.get_tokenized_model("churn").version == "1"
    assert registry.get_tokenized_model("churn", "latest").version == "1"
    assert registry.get_tokenized_model("churn", "LATEST").version == "1"
    with pytest.raises(HokusaiValidationError, match="must be a positive version number or 'latest'"):
        registry.get_tokenized_model("churn", "newest")


def test_a_failed_registration_leaves_its_token_free(registry: ModelRegistry) -> None:
    """As on the server: a strict check that fails must not keep the token for the mistyped model."""
    client = registry.local.client
    run = client.create_run(client.create_experiment("typo"))
    source = f"runs:/{run.info.run_id}/model"  # the run has no accuracy metric
    with pytest.raises(HokusaiValidationError, match="strict mode"):
        _register(registry, model_uri=source, model_name="churn-typo", strict=True)

    registered = _register(registry, model_uri=source, model_name="churn")

    assert (registered.model_name, registered.token_id) == ("churn", "CHURN")
    assert [model.model_name for model in registry.list_tokenized_models("churn")] == ["churn"]


def test_list_by_token_and_owner(registry: ModelRegistry) -> None:
    _register(registry)
    _register(registry, model_uri="s3://bucket/churn-v2")
    _register(registry, model_name="fraud", token_id="FRAUD")
    everything = registry.list_tokenized_models()
    assert [(model.model_name, model.version) for model in everything] == [
        ("churn", "1"),
        ("churn", "2"),
        ("fraud", "1"),
    ]
    assert [model.model_name for model in registry.list_tokenized_models("fraud")] == ["fraud"]
    owner = registry.whoami()["owner"]
    assert len(registry.list_tokenized_models(owner=owner)) == 3
    assert registry.list_tokenized_models(owner="someone-else") == []
    with pytest.raises(HokusaiValidationError):
        registry.list_tokenized_models(owner="no spaces")


def test_baseline(registry: ModelRegistry) -> None:
    entry = registry.register_baseline_via_api("classification", RUN_ID, {"dataset": "v1"})
    assert (entry.model_name, entry.version, entry.model_type, entry.run_id) == (
        "hokusai-baseline-classification",
        "1",
        "classification",
        RUN_ID,
    )
    assert entry.model_uri == "models:/hokusai-baseline-classification/1"
    assert entry.tags["metadata"] == '{"dataset":"v1"}'
    assert entry.tags["is_baseline"] == "true"
    assert entry.tags["registered_by"] == registry.whoami()["owner"]
    again = registry.register_baseline_via_api("classification", RUN_ID, {"dataset": "v1"})
    assert (again.version, again.created, again.warnings) == ("1", False, ())  # the same model: the version it became
    changed = registry.register_baseline_via_api("classification", RUN_ID, {"dataset": "v2"})
    assert (changed.version, changed.tags["metadata"]) == ("1", '{"dataset":"v1"}')
    assert len(changed.warnings) == 1 and "metadata differs from the version's" in changed.warnings[0]
    without = registry.register_baseline_via_api("classification", RUN_ID, {}, artifact_path="challenger")
    assert (without.version, without.created) == ("2", True)
    assert "metadata" not in without.tags  # as over the API, which sends no metadata for an empty mapping
    stored = registry.local.client.get_model_version("hokusai-baseline-classification", "2")
    assert stored.source == f"runs:/{RUN_ID}/challenger"


def test_whoami_is_the_local_user(registry: ModelRegistry) -> None:
    identity = registry.whoami()
    assert identity["key_id"] is None and identity["expires_at"] is None
    assert identity["scopes"] == ["read", "write"]


def test_quickstart_runs_in_mock_mode_twice(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    mock_store: Path,
    no_network: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("HOKUSAI_MOCK_MODE", "true")
    monkeypatch.chdir(tmp_path)  # MLflow writes run artifacts to ./mlruns
    quickstart = runpy.run_path(str(EXAMPLE))
    quickstart["main"](["quickstart.py", "qs-model", "qs-token"])
    quickstart["main"](["quickstart.py", "qs-model", "qs-token"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Registered qs-model version 1 for token QS-TOKEN"
    assert "Registered qs-model version 2 for token QS-TOKEN" in lines
    assert not any("warning" in line for line in lines)  # the run and its metric are in the local store
    # The runs' artifacts stay in the test's directories, never in the checkout the suite runs from.
    artifacts = Path(ModelRegistry().local.client.get_experiment("0").artifact_location.removeprefix("file://"))
    assert not artifacts.is_relative_to(EXAMPLE.parents[1]), artifacts


def test_a_new_local_store_keeps_the_default_experiments_artifacts_in_the_hokusai_home(tmp_path: Path) -> None:
    """MLflow would give them `./mlruns` of whichever process first opened the store: a walkthrough found a later
    run's artifacts in the directory an earlier, unrelated script had run from."""
    home, first, second = tmp_path / "home", tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    script = (
        "import hokusai, mlflow\nhokusai.setup()\nwith mlflow.start_run():\n    mlflow.log_text('kept', 'note.txt')\n"
    )
    env = {**os.environ, "HOKUSAI_HOME": str(home), "HOKUSAI_MOCK_MODE": "true", "MLFLOW_TRACKING_URI": ""}
    for workdir in (first, second):
        done = subprocess.run([sys.executable, "-c", script], env=env, cwd=workdir, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]

    assert len(list((home / "mock" / "artifacts").glob("0/*/artifacts/note.txt"))) == 2
    assert not (first / "mlruns").exists() and not (second / "mlruns").exists()
