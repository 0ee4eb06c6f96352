"""The rules of `hokusai.validation` the SDK and the API share, where a value was silently changed before: a baseline a
float reads as 0, a tag that is no finite number, padded metadata."""

from __future__ import annotations

import decimal
import math
from fractions import Fraction

import numpy
import pytest

from hokusai.errors import HokusaiValidationError
from hokusai.validation import (
    METADATA_FIELDS,
    json_nodes,
    tag_value_problem,
    unpaired_surrogate_at,
    validate_baseline_value,
    validate_metadata_fields,
    validate_user_tags,
)

UNDERFLOW = "baseline_value: is too small for a 64-bit float: it would be stored as 0"


@pytest.mark.parametrize(
    "tiny",
    [decimal.Decimal("1e-400"), decimal.Decimal("-5E-325"), Fraction(1, 10**400)],
    ids=repr,
)
def test_an_exact_number_a_float_reads_as_zero_is_refused(tiny: object) -> None:
    with pytest.raises(HokusaiValidationError, match=UNDERFLOW) as refused:
        validate_baseline_value(tiny)
    assert refused.value.field == "baseline_value"


@pytest.mark.parametrize("zero", [decimal.Decimal("0"), decimal.Decimal("-0E-500"), Fraction(0), 0, -0.0], ids=repr)
def test_zero_stays_a_baseline(zero: object) -> None:
    assert validate_baseline_value(zero) == 0.0


def test_the_smallest_float_is_kept() -> None:
    assert validate_baseline_value(decimal.Decimal("5e-324")) == 5e-324


@pytest.mark.parametrize("not_a_number", [decimal.Decimal("sNaN"), decimal.Decimal("-sNaN")], ids=repr)
def test_a_signalling_nan_is_a_validation_error(not_a_number: decimal.Decimal) -> None:
    with pytest.raises(HokusaiValidationError, match="must be finite"):
        validate_baseline_value(not_a_number)


@pytest.mark.parametrize(
    "value",
    [math.nan, math.inf, -math.inf, numpy.nan, numpy.float32("inf"), decimal.Decimal("NaN"), decimal.Decimal("sNaN")],
    ids=repr,
)
def test_a_tag_that_is_no_finite_number_is_refused(value: object) -> None:
    assert tag_value_problem("k", value) == "the value of 'k' must be finite (not NaN or infinity)"
    with pytest.raises(HokusaiValidationError, match="must be finite") as refused:
        validate_user_tags({"k": value})
    assert refused.value.field == "tags"


@pytest.mark.parametrize("value", [1.5, 10**400, Fraction(10**400), decimal.Decimal("1e999"), True, numpy.int64(3)])
def test_finite_numbers_stay_tags(value: object) -> None:
    assert validate_user_tags({"k": value}) == {"k": str(value)}


@pytest.mark.parametrize("name", METADATA_FIELDS)
@pytest.mark.parametrize("padded", [" spec", "spec ", "\tspec\n"])
def test_padded_metadata_is_refused_not_trimmed(name: str, padded: str) -> None:
    with pytest.raises(HokusaiValidationError, match="must not start or end with whitespace") as refused:
        validate_metadata_fields({name: padded})
    assert refused.value.field == name


def test_metadata_is_stored_as_sent() -> None:
    assert validate_metadata_fields({"eval_spec": "spec  v2", "scorer_ref": None}) == {"hokusai.eval_spec": "spec  v2"}


def test_json_nodes_walk_in_document_order_with_their_paths() -> None:
    nodes = list(json_nodes({"a": [1, {"b": 2}], "c": 3}))
    assert [path for path, _ in nodes] == ["", "a", "a.0", "a.1", "a.1.b", "c"]
    assert unpaired_surrogate_at({"a": [1, {"\ud800": 2}]}) == "a.1.\\ud800"
