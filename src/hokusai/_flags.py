"""The one parser for every boolean ``HOKUSAI_*`` flag, so ``"false"`` means false everywhere."""

from __future__ import annotations

import os
from typing import Literal

from hokusai.errors import HokusaiConfigurationError

__all__ = ["DEBUG", "MOCK_MODE", "OPTIONAL_MLFLOW", "Mode", "current_mode", "debug", "env_flag", "mock_mode_error"]

Mode = Literal["remote", "mock", "optional"]

MOCK_MODE = "HOKUSAI_MOCK_MODE"
OPTIONAL_MLFLOW = "HOKUSAI_OPTIONAL_MLFLOW"
DEBUG = "HOKUSAI_DEBUG"

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def env_flag(name: str, *, default: bool = False) -> bool:
    """Read a boolean environment variable; unset or empty gives ``default``, anything unknown is an error."""
    raw = os.environ.get(name, "")
    value = raw.strip().lower()
    if not value:
        return default
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    # A typo such as "ture" must not silently pick a mode.
    raise HokusaiConfigurationError(
        f"{name}={raw!r} is not a boolean.", hint=f"use 1/true/yes/on or 0/false/no/off, or unset {name}"
    )


def current_mode() -> Mode:
    """``mock``: a local MLflow store only, no network at all (wins over the other flag).
    ``optional``: the API, falling back to the local store and the outbox when it is unreachable.
    ``remote``: the API only.
    """
    if env_flag(MOCK_MODE):
        return "mock"
    return "optional" if env_flag(OPTIONAL_MLFLOW) else "remote"


def mock_mode_error() -> HokusaiConfigurationError:
    """For a call that needs the API, asked for in mock mode (which never talks to one)."""
    return HokusaiConfigurationError(
        f"{MOCK_MODE} is on, so there is no API to send to.", hint=f"unset {MOCK_MODE} to talk to the API"
    )


def debug() -> bool:
    return env_flag(DEBUG)
