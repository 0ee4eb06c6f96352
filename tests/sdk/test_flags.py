from __future__ import annotations

import pytest

from hokusai._flags import MOCK_MODE, OPTIONAL_MLFLOW, current_mode, env_flag
from hokusai.errors import HokusaiConfigurationError


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", "Yes", "on", "  on\n"])
def test_true_spellings(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("HOKUSAI_X", raw)
    assert env_flag("HOKUSAI_X") is True


@pytest.mark.parametrize("raw", ["0", "false", "False", "NO", "off", " off "])
def test_false_spellings(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("HOKUSAI_X", raw)
    assert env_flag("HOKUSAI_X", default=True) is False


@pytest.mark.parametrize("raw", [None, "", "   "])
def test_unset_or_empty_gives_the_default(monkeypatch: pytest.MonkeyPatch, raw: str | None) -> None:
    if raw is not None:
        monkeypatch.setenv("HOKUSAI_X", raw)
    assert env_flag("HOKUSAI_X") is False
    assert env_flag("HOKUSAI_X", default=True) is True


def test_anything_else_is_an_error_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOKUSAI_X", "ture")
    with pytest.raises(HokusaiConfigurationError) as caught:
        env_flag("HOKUSAI_X")
    assert str(caught.value) == (
        "HOKUSAI_X='ture' is not a boolean. (HINT: use 1/true/yes/on or 0/false/no/off, or unset HOKUSAI_X)"
    )


def test_mode_defaults_to_remote() -> None:
    assert current_mode() == "remote"


def test_false_does_not_enable_mock_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    # The earlier implementation treated any non-empty value, even "false", as on.
    monkeypatch.setenv(MOCK_MODE, "false")
    assert current_mode() == "remote"


def test_mock_wins_over_optional(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MOCK_MODE, "yes")
    monkeypatch.setenv(OPTIONAL_MLFLOW, "yes")
    assert current_mode() == "mock"


def test_optional_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(OPTIONAL_MLFLOW, "1")
    assert current_mode() == "optional"
