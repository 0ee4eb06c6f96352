"""The shared input rules (`hokusai.validation`), used by both the SDK and the server."""

from __future__ import annotations

import math
import re
from decimal import Decimal

import numpy
import pytest

from hokusai.errors import HokusaiValidationError
from hokusai.validation import (
    ARTIFACT_PATH_MAX_LENGTH,
    MODEL_URI_MAX_LENGTH,
    RESERVED_TAGS,
    TAG_BASELINE,
    TAG_METRIC,
    ModelsUri,
    baseline_mismatch,
    baseline_model_name,
    baseline_model_type,
    normalize_model_type,
    normalize_token_id,
    parse_models_uri,
    parse_scopes,
    repeat_conflict,
    run_id_from_uri,
    run_model_uri,
    tokenized_tags,
    unpaired_surrogate_at,
    validate_baseline_value,
    validate_description,
    validate_key_name,
    validate_metadata,
    validate_metadata_fields,
    validate_metric_name,
    validate_model_name,
    validate_model_uri,
    validate_owner,
    validate_tokenized_model_name,
    validate_user_tags,
)


@pytest.mark.parametrize(
    ("raw", "canonical"), [("abc", "ABC"), ("Lscor-2", "LSCOR-2"), ("a" * 64, "A" * 64), ("7", "7")]
)
def test_token_ids_are_upper_cased(raw: str, canonical: str) -> None:
    assert normalize_token_id(raw) == canonical


@pytest.mark.parametrize(
    "bad", ["", "-abc", "abc-", "a" * 65, "ab c", "tök", "a_b", "a/b", "a\x00b", None, 12], ids=repr
)
def test_bad_token_ids_name_the_field(bad: object) -> None:
    with pytest.raises(HokusaiValidationError) as caught:
        normalize_token_id(bad)
    assert caught.value.field == "token_id"
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("classification", "classification"),
        ("Classification", "classification"),
        ("LLM_chat-2", "llm_chat-2"),
        ("9" * 64, "9" * 64),
    ],
)
def test_model_types_are_lower_cased(raw: str, canonical: str) -> None:
    """A type names the registered model `hokusai-baseline-<type>`: one series whatever the case typed."""
    assert normalize_model_type(raw) == canonical


@pytest.mark.parametrize("bad", ["", "_clf", "-clf", "a" * 65, "bad type", "clf/x", "Kelvin\u212a", "\u0131", None, 3])
def test_bad_model_types_name_the_field(bad: object) -> None:
    with pytest.raises(HokusaiValidationError) as caught:
        normalize_model_type(bad)
    assert caught.value.field == "model_type"


@pytest.mark.parametrize("value", [0, 0.93, -1.5, 10**300, 1e308])
def test_finite_numbers_are_baselines(value: float) -> None:
    assert validate_baseline_value(value) == float(value)


@pytest.mark.parametrize("bad", [True, False, math.nan, math.inf, -math.inf, 10**400, "0.9", None], ids=repr)
def test_bools_nan_infinity_and_strings_are_not_baselines(bad: object) -> None:
    with pytest.raises(HokusaiValidationError, match="baseline_value"):
        validate_baseline_value(bad)


@pytest.mark.parametrize("name", ["accuracy", "usage:reply_rate", "f1 score", "eval/auc", "mse.val", "précision"])
def test_metric_names_follow_mlflow(name: str) -> None:
    assert validate_metric_name(name) == name


@pytest.mark.parametrize(
    "bad", ["", " ", " accuracy", "acc\n", "a" * 251, "a;b", "../x", "/lead", "a//b", "a/", "a/./b", "."], ids=repr
)
def test_bad_metric_names(bad: str) -> None:
    with pytest.raises(HokusaiValidationError, match="metric_name"):
        validate_metric_name(bad)


@pytest.mark.parametrize("bad", ["../k", "/k", "k/", "a;b"], ids=repr)
def test_tag_names_follow_mlflows_rules(bad: str) -> None:
    with pytest.raises(HokusaiValidationError, match="tags"):
        validate_user_tags({bad: "v"})


@pytest.mark.parametrize(
    ("model_uri", "message"),
    [
        ("models:/", "must look like models:/<model id>, models:/<name>/<version>"),
        ("models:/name@", "must look like"),
        ("models:/a/b/c", "must look like"),
        ("models:/name/Production", "names the stage 'Production', which MLflow 3 deprecates"),
        ("models:/name/99999999999999999999", "names version '99999999999999999999'; versions are numbers from 1"),
        ("models:/name/0", "names version '0'"),
        # MLflow reads a scheme in any case (urlparse lower-cases it): these slipped past a case-sensitive check.
        ("MODELS:/name/Production", "names the stage 'Production'"),
        ("Models:/name@", "must look like"),
        ("models://[host/1", "is not a valid URI: Invalid IPv6 URL"),
        ("s3://[bucket/model", "is not a valid URI"),
        ("RUNS:/no run id!/model", "is not a valid MLflow run id"),
        ("Runs:", "must look like runs:/<run id>/<artifact path>"),
    ],
)
def test_models_uris_the_registry_cannot_pin_to_one_version_are_refused(model_uri: str, message: str) -> None:
    """MLflow answered each of these with a 500 (a 502 from the registry)."""
    with pytest.raises(HokusaiValidationError, match=re.escape(f"model_uri: {message}")):
        validate_model_uri(model_uri)


@pytest.mark.parametrize(
    "model_uri", ["models:/m-0123abcd", "models:/name/7", "models:/name@champion", "models:/name/latest"]
)
def test_models_uris_of_one_version_pass(model_uri: str) -> None:
    assert validate_model_uri(model_uri) == model_uri


@pytest.mark.parametrize(
    ("model_uri", "says"),
    [
        ("file:///etc/model", "is a local path"),
        ("model", "is a local path"),
        ("/home/me/model", "is a local path"),
        ("C:\\models\\churn", "is a local path"),
        ("0123456789abcdef0123456789abcdef", "is a run id, not a model URI: use runs:/0123456789abcdef"),
    ],
)
def test_local_paths_and_bare_run_ids_are_refused_before_anything_is_sent(model_uri: str, says: str) -> None:
    # The SDK, its offline queue and the server share this rule: a queued registration the server would refuse
    # used to fail only at `hokusai sync` (probe, 2026-11-29).
    with pytest.raises(HokusaiValidationError, match=f"model_uri: '.*' {re.escape(says)}"):
        validate_model_uri(model_uri)


def test_model_uris_fit_mlflows_source_column() -> None:
    assert validate_model_uri("s3://bucket/" + "a" * 488) == "s3://bucket/" + "a" * 488
    with pytest.raises(HokusaiValidationError, match="model_uri: must be at most 500"):
        validate_model_uri("models:/" + "a" * 70_000 + "/1")


def test_a_baseline_may_be_any_real_number_type_a_metric_comes_in() -> None:
    assert validate_baseline_value(numpy.float32(0.5)) == 0.5
    assert validate_baseline_value(numpy.int64(3)) == 3.0
    assert validate_baseline_value(Decimal("0.91")) == 0.91
    for not_a_number in (numpy.bool_(True), "0.9", None, [0.9]):
        with pytest.raises(HokusaiValidationError, match="must be a number"):
            validate_baseline_value(not_a_number)
    with pytest.raises(HokusaiValidationError, match="must be finite"):
        validate_baseline_value(Decimal("NaN"))


def test_a_baseline_beyond_float_range_says_so() -> None:
    with pytest.raises(HokusaiValidationError, match="too large for a 64-bit float"):
        validate_baseline_value(10**400)


def test_user_tags_cannot_overwrite_reserved_ones() -> None:
    for reserved in [*RESERVED_TAGS, "hokusai.eval_spec"]:
        with pytest.raises(HokusaiValidationError, match="reserved"):
            validate_user_tags({reserved: "x"})
    assert validate_user_tags({"team": "vision", "epochs": 3}) == {"team": "vision", "epochs": "3"}


@pytest.mark.parametrize("bad", [{"k": object()}, {"k": None}, {"k": [1]}, {f"k{i}": "v" for i in range(101)}])
def test_tag_values_are_strings_numbers_or_bools_and_few(bad: dict[str, object]) -> None:
    with pytest.raises(HokusaiValidationError, match="tags"):
        validate_user_tags(bad)


def test_metadata_fields_become_bounded_hokusai_tags() -> None:
    assert validate_metadata_fields({"eval_spec": "spec", "scorer_ref": None}) == {"hokusai.eval_spec": "spec"}
    with pytest.raises(HokusaiValidationError, match="eval_spec: must not start or end with whitespace"):
        validate_metadata_fields({"eval_spec": " spec "})
    with pytest.raises(HokusaiValidationError, match="primary_metric"):
        validate_metadata_fields({"primary_metric": "x" * 501})


def test_metadata_is_compact_json_of_bounded_size() -> None:
    assert validate_metadata({}) is None and validate_metadata(None) is None  # empty metadata is no metadata
    assert validate_metadata({"b": 1, "a": "x"}) == '{"a":"x","b":1}'
    for bad in ({"x": math.nan}, {"x": object()}, {"x": "y" * 5000}, ["not", "a", "mapping"]):
        with pytest.raises(HokusaiValidationError, match="metadata"):
            validate_metadata(bad)  # type: ignore[arg-type]


def test_runs_uris_give_their_run_id() -> None:
    assert run_id_from_uri("runs:/0123abcd/model") == "0123abcd"
    assert run_id_from_uri("RUNS:/0123abcd/model") == "0123abcd"  # MLflow reads the scheme in any case
    assert run_id_from_uri("models:/m-123") is None
    with pytest.raises(HokusaiValidationError, match="model_uri"):
        run_id_from_uri("runs:/")


def test_tokenized_models_stay_out_of_the_baselines_prefix() -> None:
    assert validate_tokenized_model_name("my-baseline-model") == "my-baseline-model"
    assert validate_model_name("hokusai-baseline-clf") == "hokusai-baseline-clf"  # looking one up stays possible
    for reserved in ("hokusai-baseline-clf", "HOKUSAI-BASELINE-clf"):
        with pytest.raises(HokusaiValidationError, match="reserved for baselines"):
            validate_tokenized_model_name(reserved)
    # MLflow refuses to create these; an existing model may still be looked up by any name.
    for refused in ("team/model", "team:model", "..", "..model"):
        with pytest.raises(HokusaiValidationError, match="as MLflow requires"):
            validate_tokenized_model_name(refused)


def test_model_names_and_owners() -> None:
    assert validate_model_name("my model/v2") == "my model/v2"
    assert validate_model_name("..model") == "..model"  # MLflow refuses to create it, but it may be looked up
    for bad in ("", " x", "a\tb", "x" * 257, ".", ".."):  # HTTP clients resolve the last two out of a URL path
        with pytest.raises(HokusaiValidationError):
            validate_model_name(bad)
    assert validate_owner("alice@example.com") == "alice@example.com"
    for bad in ("", "-x", "a b", "x" * 65, "offline-cli", "Offline-CLI"):  # the audit log's offline actor
        with pytest.raises(HokusaiValidationError):
            validate_owner(bad)


def test_tokenized_tags_keep_the_earlier_names() -> None:
    assert tokenized_tags(token_id="T", metric_name="accuracy", baseline_value=0.93, run_id="r1") == {
        "hokusai_token_id": "T",
        "benchmark_metric": "accuracy",
        "benchmark_value": "0.93",
        "hokusai_status": "registered",
        "mlflow_run_id": "r1",
    }


def test_baseline_mismatch_uses_a_tolerance() -> None:
    metrics = {"accuracy": 0.93}
    assert baseline_mismatch(run_id="r", metrics=metrics, metric_name="accuracy", baseline_value=0.9300000001) is None
    assert "not the baseline" in str(baseline_mismatch(run_id="r", metrics=metrics, metric_name="accuracy",
                                                       baseline_value=0.94))  # fmt: skip
    assert "has no metric" in str(baseline_mismatch(run_id="r", metrics={}, metric_name="f1", baseline_value=0.5))


def test_a_repeat_is_idempotent_only_with_the_stored_metric_and_baseline() -> None:
    stored = {TAG_METRIC: "accuracy", TAG_BASELINE: repr(0.91)}
    same = repeat_conflict(version_label="v1", registered=stored, metric_name="accuracy", baseline_value=0.91)
    assert same is None
    other = repeat_conflict(
        version_label="Model 'm' version 1", registered=stored, metric_name="loss", baseline_value=0.2
    )
    assert other is not None
    assert other.startswith(
        "Model 'm' version 1 is already registered for this token from this source, with metric "
        "'accuracy' and baseline 0.91; this request gives 'loss' and 0.2."
    )
    unreadable = {TAG_METRIC: "accuracy", TAG_BASELINE: "n/a"}
    assert repeat_conflict(version_label="v", registered=unreadable, metric_name="accuracy", baseline_value=0.91)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("models:/m-0123abcd", ModelsUri(model_id="m-0123abcd")),
        ("models:/churn/3", ModelsUri(name="churn", version="3")),
        ("models:/churn/03", ModelsUri(name="churn", version="03")),
        ("models:/churn/latest", ModelsUri(name="churn")),
        ("models:/churn/Latest", ModelsUri(name="churn")),
        ("models:/churn/Production", ModelsUri(name="churn", stage="Production")),
        ("models:/churn@champion", ModelsUri(name="churn", alias="champion")),
        ("models:/a@b@champ", ModelsUri(name="a@b", alias="champ")),
        ("models:/a@b/3", ModelsUri(name="a@b", version="3")),
        ("models:/what?/3", ModelsUri(model_id="what")),  # MLflow reads "?/3" as a query
        ("models:/team/m/3", None),
        ("models:/", None),
        ("models:/churn/", None),
        ("models:/churn@", None),
        ("MODELS:/churn/3", ModelsUri(name="churn", version="3")),
        ("models://[host/3", None),
        ("runs:/abc/model", None),
        ("s3://bucket/model", None),
    ],
)
def test_models_uris_are_read_by_mlflows_rules(uri: str, expected: ModelsUri | None) -> None:
    assert parse_models_uri(uri) == expected


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ({"name": "ok", "tags": {"team": "a\ud800"}}, "tags.team"),
        ({"tags": {"te\udfffam": "ok"}}, "tags.te\\udfffam"),  # the key itself, shown escaped
        ({"list": ["ok", {"deep": ["\ud800"]}]}, "list.1.deep.0"),
        ("\ud800", "body"),
        ({"first": "\ud800", "second": "\udfff"}, "first"),
        ({"name": "ok", "emoji": "\U0001f600"}, None),  # a surrogate pair in JSON is one character in Python
    ],
)
def test_unpaired_surrogates_are_found_where_they_are(value: object, where: str | None) -> None:
    assert unpaired_surrogate_at(value) == where


def test_unpaired_surrogates_are_found_at_any_depth() -> None:
    """Recursion hit Python's limit some hundreds deep: a 500 for a body that only had to be a 400."""
    nested: object = "\ud800"
    for _ in range(100_000):
        nested = [nested]
    assert unpaired_surrogate_at({"tags": nested}) == "tags" + ".0" * 100_000


@pytest.mark.parametrize(
    "name",
    [
        "👩\u200d💻 laptop",
        "\u0646\u06cc\u0645\u200c\u0641\u0627\u0635\u0644\u0647",
        "ci\u00a0deploy",
        "résumé key",
        "a [bold] name",
    ],
    ids=["emoji-joiner", "persian-non-joiner", "no-break-space", "accents", "brackets"],
)
def test_key_names_are_any_text_that_prints_as_itself(name: str) -> None:
    assert validate_key_name(name) == name


@pytest.mark.parametrize(
    ("name", "found"),
    [("a\x1b[2J", "U+001B"), ("C1\x9b", "U+009B"), ("admin\u202etxt", "U+202E"), ("zero\u200bwidth", "U+200B"),
     ("line\u2028break", "U+2028"), ("soft\u00adhyphen", "U+00AD"), ("private\ue000", "U+E000"),
     ("unassigned\U000e0000", "U+E0000")],
)  # fmt: skip
def test_key_names_that_could_steer_a_terminal_are_refused(name: str, found: str) -> None:
    with pytest.raises(HokusaiValidationError, match=re.escape(f"found {found})")) as refused:
        validate_key_name(name)
    assert refused.value.field == "name"


def test_a_baseline_models_name_gives_back_its_type() -> None:
    assert baseline_model_type(baseline_model_name("clf")) == "clf"


def test_a_run_model_uri_names_the_run_and_the_model_path() -> None:
    run_id = "0123456789abcdef0123456789abcdef"
    assert run_model_uri(run_id, "/model/") == f"runs:/{run_id}/model"
    with pytest.raises(HokusaiValidationError) as no_path:
        run_model_uri(run_id, None)
    assert no_path.value.field == "artifact_path"
    with pytest.raises(HokusaiValidationError) as no_run:
        run_model_uri(None, "model")
    assert no_run.value.field == "mlflow_run_id"


@pytest.mark.parametrize("bad", [" model", "a\x00b", "a\nb", "a" * (ARTIFACT_PATH_MAX_LENGTH + 1)], ids=repr)
def test_a_bad_artifact_path_is_named_as_the_field_the_caller_sent(bad: str) -> None:
    run_id = "0123456789abcdef0123456789abcdef"
    assert len(run_model_uri(run_id, "a" * ARTIFACT_PATH_MAX_LENGTH)) == MODEL_URI_MAX_LENGTH
    with pytest.raises(HokusaiValidationError) as refused:
        run_model_uri(run_id, bad)
    assert refused.value.field == "artifact_path"


def test_text_mlflow_stores_may_not_hold_nul_which_postgresql_refuses() -> None:
    assert validate_description("line one\nline two") == "line one\nline two"
    for refuse, field in [
        (lambda: validate_description("a\x00b"), "description"),
        (lambda: validate_user_tags({"team": "a\x00b"}), "tags"),
        (lambda: validate_metadata_fields({"eval_spec": "\x00x"}), "eval_spec"),
    ]:
        with pytest.raises(HokusaiValidationError, match="NUL") as refused:
            refuse()
        assert refused.value.field == field


def test_the_mlflow_user_tag_is_not_the_callers_to_claim() -> None:
    with pytest.raises(HokusaiValidationError, match=r"'mlflow\.user' names who acted"):
        validate_user_tags({"mlflow.user": "bob"})
    assert validate_user_tags({"mlflow.note.content": "x"}) == {"mlflow.note.content": "x"}


def test_an_owner_given_under_another_name_is_refused_under_that_name() -> None:
    with pytest.raises(HokusaiValidationError, match="new_owner: must be 1-64") as refused:
        validate_owner("al ice", "new_owner")
    assert refused.value.field == "new_owner"


def test_a_scope_list_that_names_none_quotes_what_was_sent() -> None:
    with pytest.raises(ValueError, match=r"got \[''\]"):
        parse_scopes([""])
