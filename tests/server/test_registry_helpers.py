"""The registry's pure helpers: MLflow filter quoting (checked with MLflow's own parser), metrics and paging."""

from __future__ import annotations

import base64
import json
import math

import httpx
import pytest
from hypothesis import given, settings, strategies as st
from mlflow.utils.search_utils import SearchModelVersionUtils

from hokusai._mlflow_filters import filter_equals, filter_in
from hokusai.errors import HokusaiValidationError
from hokusai.server.mlflow_rest import checked_page_token, mlflow_error
from hokusai.server.registry.lookups import _MAX_FILTER_LENGTH, _slice, no_tokenized_version
from hokusai.server.registry.sources import RunFacts
from hokusai.server.registry.tokenized import Registration
from hokusai.server.registry.versions import metrics_tags, tokenized_info
from hokusai.validation import (
    TAG_BASELINE,
    TAG_METRIC,
    TAG_METRICS,
    TAG_TOKEN_ID,
    TAG_VALUE_MAX_LENGTH,
    baseline_check,
)


@settings(max_examples=300, deadline=None, database=None)
@given(names=st.lists(st.text(min_size=0, max_size=40), min_size=1, max_size=4))
def test_filter_in_round_trips_any_text_through_mlflows_parser(names: list[str]) -> None:
    parsed = SearchModelVersionUtils.parse_search_filter(f"name IN {filter_in(names)} AND tags.t = 'x'")

    assert len(parsed) == 2
    assert list(parsed[0]["value"]) == names
    assert parsed[1] == {"type": "tag", "key": "t", "comparator": "=", "value": "x"}


def test_filter_in_cannot_be_broken_out_of() -> None:
    hostile = "x') OR name LIKE ('%"

    parsed = SearchModelVersionUtils.parse_search_filter(f"name IN {filter_in([hostile])}")

    assert parsed == [{"type": "attribute", "key": "name", "comparator": "IN", "value": (hostile,)}]


@pytest.mark.parametrize("value", ["it's", "a b", "", "x%", 'q"'])
def test_filter_equals_refuses_anything_but_ids(value: str) -> None:
    with pytest.raises(ValueError):
        filter_equals(value)


def test_filter_equals_quotes_ids() -> None:
    assert filter_equals("TOKEN-1") == "'TOKEN-1'"


def _run(metrics: dict[str, float]) -> RunFacts:
    return RunFacts(run_id="r1", experiment_id="1", artifact_uri="a", metrics=metrics, model_steps={})


def _check(run: RunFacts | None, baseline: float, *, strict: bool) -> list[str]:
    return baseline_check(
        run_id=run.run_id if run else None,
        metrics=run.metrics if run else {},
        metric_name="accuracy",
        baseline_value=baseline,
        strict=strict,
    )


@pytest.mark.parametrize(
    ("recorded", "claimed"),
    [(0.875, 0.875), (0.875, 0.875 * (1 + 5e-7)), (0.0, 5e-10), (1e6, 1e6 + 0.5)],
)
def test_metric_within_tolerance_gives_no_warning(recorded: float, claimed: float) -> None:
    assert _check(_run({"accuracy": recorded}), claimed, strict=True) == []


@pytest.mark.parametrize(
    ("metrics", "fragment", "field"),
    [
        ({"accuracy": 0.9}, "is 0.9, not", "baseline_value"),
        ({}, "has no metric", "metric_name"),  # the name is what to fix
        (None, "the source has no run", "baseline_value"),
    ],
)
def test_metric_mismatch_or_no_run_warns_or_fails_when_strict(
    metrics: dict[str, float] | None, fragment: str, field: str
) -> None:
    run = _run(metrics) if metrics is not None else None

    warnings = _check(run, 0.8, strict=False)

    assert len(warnings) == 1 and fragment in warnings[0]
    with pytest.raises(HokusaiValidationError, match="strict mode") as refused:
        _check(run, 0.8, strict=True)
    assert refused.value.field == field


def test_metrics_tag_is_json_and_bounded() -> None:
    many = {f"metric_{index:04d}": index / 3 for index in range(1000)}
    many["nan_metric"] = math.nan

    tag = metrics_tags(many)[TAG_METRICS]

    assert len(tag) <= TAG_VALUE_MAX_LENGTH
    decoded = json.loads(tag)
    assert decoded["metric_0000"] == 0.0 and 10 < len(decoded) < 1000
    assert json.loads(metrics_tags({"a": 1.0, "b": math.inf})[TAG_METRICS]) == {"a": 1.0, "b": None}


def _version(**tags: str) -> dict[str, object]:
    return {"name": "m", "version": "3", "source": "models:/m-1", "run_id": "", "tags": [
        {"key": key, "value": value} for key, value in tags.items()
    ]}  # fmt: skip


def test_tokenized_info_reads_the_tags() -> None:
    info = tokenized_info(_version(**{TAG_TOKEN_ID: "T", TAG_METRIC: "acc", TAG_BASELINE: "0.5", "team": "x"}))

    assert info is not None
    assert (info.model_uri, info.baseline_value, info.run_id, info.tags["team"]) == ("models:/m/3", 0.5, None, "x")


@pytest.mark.parametrize(
    "tags",
    [
        {TAG_METRIC: "acc", TAG_BASELINE: "0.5"},
        {TAG_TOKEN_ID: "T", TAG_BASELINE: "0.5"},
        {TAG_TOKEN_ID: "T", TAG_METRIC: "acc", TAG_BASELINE: "nan"},
        {TAG_TOKEN_ID: "T", TAG_METRIC: "acc", TAG_BASELINE: "high"},
    ],
)
def test_tokenized_info_skips_versions_without_usable_tags(tags: dict[str, str]) -> None:
    assert tokenized_info(_version(**tags)) is None


def test_page_tokens_must_look_like_mlflows() -> None:
    good = base64.b64encode(b'{"offset": 100}').decode()

    assert checked_page_token(good) == good
    slice_start = b'{"from": "m"}'  # the API's own, not MLflow's: not passed on
    too_deep = b"[" * 1500  # 2000 characters encoded, within the length allowed; Python's parser gives up on it
    raws = (b"[1]", b'{"offset": -1}', slice_start, too_deep)
    for bad in ["garbage", *(base64.b64encode(raw).decode() for raw in raws)]:
        with pytest.raises(HokusaiValidationError):
            checked_page_token(bad)


def test_an_owners_models_are_searched_in_slices_that_each_fit_one_filter() -> None:
    clause = "tags.hokusai_token_id LIKE '%'"
    models = sorted(f"{index:03d}-" + "\u00e9" * 240 for index in range(25))  # each name ~965 characters escaped

    slices, remaining = [], models
    while remaining:
        slices.append(_slice(remaining, clause))
        remaining = remaining[len(slices[-1]) :]

    assert [name for names in slices for name in names] == models
    assert len(slices) > 1 and all(slices)
    for names in slices:
        filter_string = f"{clause} AND name IN {filter_in(names)}"
        assert len(filter_string) <= _MAX_FILTER_LENGTH
        assert len(SearchModelVersionUtils.parse_search_filter(filter_string)[1]["value"]) == len(names)
    assert _slice(["x" * 10_000], clause) == ["x" * 10_000]  # one name always goes, however long
    assert _slice(models[:3], clause) == models[:3]


def test_registration_needs_exactly_one_source() -> None:
    fields = dict(
        artifact_path="model", model_name="m", token_id="t", metric_name="acc", baseline_value=0.5,
        tags=None, description=None, metadata={}, strict=False,
    )  # fmt: skip
    with pytest.raises(HokusaiValidationError, match="exactly one"):
        Registration.build(model_uri=None, mlflow_run_id=None, **fields)  # type: ignore[arg-type]
    with pytest.raises(HokusaiValidationError, match="exactly one"):
        Registration.build(model_uri="runs:/abc/model", mlflow_run_id="abc", **fields)  # type: ignore[arg-type]
    built = Registration.build(model_uri=None, mlflow_run_id="abc", **fields)  # type: ignore[arg-type]
    assert (built.model_uri, built.tags["mlflow_run_id"], built.token_id) == ("runs:/abc/model", "abc", "T")


_SOURCE_FIELDS = dict(
    mlflow_run_id=None, artifact_path="model", model_name="m", token_id="t", metric_name="acc", baseline_value=0.5,
    tags=None, description=None, metadata={}, strict=False,
)  # fmt: skip


@pytest.mark.parametrize(
    "local_path",
    ["model", "/tmp/model", "file:///tmp/model", "C:/models/churn", "c:\\models\\churn", "\\\\server\\share\\churn"],
)
def test_a_path_on_some_disk_is_refused_naming_model_uri(local_path: str) -> None:
    # A Windows path parses with the drive letter as its scheme, and MLflow's server took it as a remote source.
    with pytest.raises(HokusaiValidationError, match="is a local path") as refused:
        Registration.build(model_uri=local_path, **_SOURCE_FIELDS)  # type: ignore[arg-type]
    assert refused.value.field == "model_uri"


def test_a_bare_run_id_is_answered_with_the_uri_that_names_its_model() -> None:
    run_id = "0123456789abcdef0123456789abcdef"
    with pytest.raises(HokusaiValidationError) as refused:
        Registration.build(model_uri=run_id, **_SOURCE_FIELDS)  # type: ignore[arg-type]
    assert refused.value.field == "model_uri"
    assert f"is a run id, not a model URI: use runs:/{run_id}/model" in refused.value.problem


@pytest.mark.parametrize(
    "remote", ["s3://bucket/churn", "gs://b/m", "mlflow-artifacts:/1/abc/artifacts", "models:/m/1"]
)
def test_storage_and_registry_uris_are_sources(remote: str) -> None:
    assert Registration.build(model_uri=remote, **_SOURCE_FIELDS).model_uri == remote  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "expected"),
    [(403, (403, "PERMISSION_DENIED")), (404, (404, "RESOURCE_DOES_NOT_EXIST")),
     (400, (400, "INVALID_PARAMETER_VALUE")), (500, (502, "TEMPORARILY_UNAVAILABLE"))],
)  # fmt: skip
def test_mlflow_errors_keep_their_layer(status: int, expected: tuple[int, str]) -> None:
    response = httpx.Response(status, json={"error_code": "INVALID_PARAMETER_VALUE", "message": "nope"})

    error = mlflow_error(response, "do a thing", "assertion")

    assert (error.status, error.error_code, error.layer) == (*expected, "mlflow")
    assert "do a thing" in error.message


@pytest.mark.parametrize(
    ("identity_mode", "cause"),
    [
        ("assertion", "refused the signed identity the API sends for you"),
        ("service-account", "refused the API's service account (HOKUSAI_MLFLOW_USERNAME/HOKUSAI_MLFLOW_PASSWORD)"),
        ("none", "the API has none set for it"),
    ],
)
def test_mlflow_refusing_the_apis_credentials_is_not_blamed_on_the_users_key(identity_mode: str, cause: str) -> None:
    error = mlflow_error(httpx.Response(401, text="You are not authenticated."), "do a thing", identity_mode)

    assert (error.status, error.error_code, error.layer) == (401, "UNAUTHENTICATED", "mlflow")
    assert error.message.startswith("Your Hokusai key was accepted, but ") and cause in error.message
    assert error.message.endswith("tell its operator (GET /ready names the cause).")


def test_a_service_account_refused_by_mlflow_is_named_not_the_user() -> None:
    error = mlflow_error(httpx.Response(403, text="Permission denied"), "create a run", "service-account")

    assert error.message.startswith("MLflow refused to let the API's service account (HOKUSAI_MLFLOW_USERNAME)")
    assert "must be an MLflow admin" in error.message


def test_a_baseline_models_404_says_where_its_baselines_are_listed() -> None:
    plain = no_tokenized_version("churn", "3")
    baseline = no_tokenized_version(" Hokusai-Baseline-Clf", "1")

    assert plain == "Model 'churn' has no tokenized version '3'."
    assert baseline.startswith("Model ' Hokusai-Baseline-Clf' has no tokenized version '1'. It holds baselines")
    assert baseline.endswith("GET /api/v1/models/baseline?model_type=clf (`hokusai models baselines --type clf`).")
