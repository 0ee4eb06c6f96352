"""The settings object is the one source of configuration, and `.env.example` documents all of it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from hokusai.server.settings import Settings

ENV_EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"


def _documented_variables() -> dict[str, str]:
    pairs = re.findall(r"^(HOKUSAI_[A-Z0-9_]+)=(.*)$", ENV_EXAMPLE.read_text(), flags=re.MULTILINE)
    return dict(pairs)


def test_env_example_lists_every_setting() -> None:
    expected = {"HOKUSAI_" + name.upper() for name in Settings.model_fields}
    assert set(_documented_variables()) == expected


def test_env_example_defaults_match_the_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    defaults = Settings()
    for variable, documented in _documented_variables().items():
        name = variable.removeprefix("HOKUSAI_").lower()
        default = getattr(defaults, name)
        if documented == "":
            assert default is None, f"{variable} is documented as unset but defaults to {default!r}"
        else:
            parsed = getattr(Settings(**{name: documented}), name)
            assert parsed == default, f"{variable}: .env.example says {documented!r}, the default is {default!r}"


def test_every_documented_variable_has_a_comment() -> None:
    lines = ENV_EXAMPLE.read_text().splitlines()
    for index, line in enumerate(lines):
        if line.startswith("HOKUSAI_"):
            above = [candidate for candidate in lines[:index] if candidate.strip()][-1]
            assert above.startswith("#") or lines[index - 1].startswith("HOKUSAI_"), line


def test_external_mlflow_credentials_come_in_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOKUSAI_MLFLOW_URL", "http://mlflow.internal:5000")
    monkeypatch.setenv("HOKUSAI_MLFLOW_USERNAME", "svc")
    with pytest.raises(ValidationError, match="set together"):
        Settings()
    monkeypatch.setenv("HOKUSAI_MLFLOW_PASSWORD", "pw")
    assert Settings().identity_mode == "service-account"


def test_identity_mode_follows_the_mlflow_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().identity_mode == "assertion"
    monkeypatch.setenv("HOKUSAI_MLFLOW_URL", "http://mlflow.internal:5000")
    assert Settings().identity_mode == "none"


def test_secrets_never_show_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOKUSAI_KEY_PEPPER", "pepper-value-123")
    assert "pepper-value-123" not in repr(Settings())


def test_levels_and_permissions_read_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOKUSAI_LOG_LEVEL", "INFO")
    monkeypatch.setenv("HOKUSAI_MLFLOW_DEFAULT_PERMISSION", "no_permissions")

    settings = Settings(_env_file=None)  # type: ignore[call-arg]

    assert (settings.log_level, settings.mlflow_default_permission) == ("info", "NO_PERMISSIONS")


def test_a_bad_setting_is_named_by_its_variable_and_its_value_is_not_shown(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOKUSAI_")}
    env |= {"HOKUSAI_PORT": "99999", "HOKUSAI_LOG_LEVEL": "loud-secret-ish"}

    result = subprocess.run(
        [sys.executable, "-m", "hokusai", "server"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 2
    assert result.stderr.startswith("Invalid configuration: HOKUSAI_PORT: Input should be less than or equal to 65535")
    assert "HOKUSAI_LOG_LEVEL: Input should be 'debug', 'info', 'warning' or 'error'" in result.stderr
    assert "loud-secret-ish" not in result.stderr and "pydantic.dev" not in result.stderr


def test_the_apis_own_mlflow_calls_wait_the_call_timeout_not_the_artifact_one() -> None:
    from hokusai.server.upstream import build_client

    settings = Settings(_env_file=None, upstream_call_timeout_seconds=7, upstream_read_timeout_seconds=600)  # type: ignore[call-arg]
    timeout = build_client("http://127.0.0.1:1", settings).timeout  # never used, so nothing to close
    assert (timeout.read, timeout.write) == (7, 7)
