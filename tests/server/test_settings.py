"""The settings object is the one source of configuration, and `.env.example` documents all of it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from hokusai.errors import HokusaiConfigurationError
from hokusai.server.settings import Settings, load_settings, unknown_variables

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
    monkeypatch.setenv("HOKUSAI_KEY_PEPPER", "pepper-value-123-pepper-value-123")
    for variable, database in (
        ("DATABASE_URL", "hokusai"),
        ("MLFLOW_DATABASE_URL", "m"),
        ("MLFLOW_AUTH_DATABASE_URL", "a"),
    ):
        monkeypatch.setenv(f"HOKUSAI_{variable}", f"postgresql+psycopg://u:db-password-123@db/{database}")

    shown = repr(Settings())

    assert "pepper-value-123-pepper-value-123" not in shown and "db-password-123" not in shown


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


@pytest.mark.parametrize(
    ("variables", "problem"),
    [
        ({"HOKUSAI_KEY_CACHE_TTL_SECONDS": "inf"}, "HOKUSAI_KEY_CACHE_TTL_SECONDS: Input should be a finite number"),
        ({"HOKUSAI_UPSTREAM_READ_TIMEOUT_SECONDS": "nan"}, "HOKUSAI_UPSTREAM_READ_TIMEOUT_SECONDS: Input should be a"),
        ({"HOKUSAI_PORT": "0"}, "HOKUSAI_PORT: Input should be greater than or equal to 1"),
        ({"HOKUSAI_MLFLOW_ADMIN_PASSWORD": "short"}, "HOKUSAI_MLFLOW_ADMIN_PASSWORD: must be at least 12 characters"),
        ({"HOKUSAI_ASSERTION_SECRET": "x"}, "HOKUSAI_ASSERTION_SECRET: must be at least 32 bytes"),
        ({"HOKUSAI_KEY_PEPPER": "a"}, "HOKUSAI_KEY_PEPPER: must be at least 32 bytes"),
        ({"HOKUSAI_MLFLOW_URL": "notaurl"}, "HOKUSAI_MLFLOW_URL: must be an http:// or https:// URL"),
        ({"HOKUSAI_PUBLIC_URL": "ftp://x"}, "HOKUSAI_PUBLIC_URL: must be an http:// or https:// URL"),
        ({"HOKUSAI_DATABASE_URL": "nonsense"}, "HOKUSAI_DATABASE_URL: must be an SQLAlchemy URL"),
        ({"HOKUSAI_ADMIN_OWNER": "bad owner!"}, "HOKUSAI_ADMIN_OWNER: "),
        ({"HOKUSAI_DATABASE_URL": "mysql://u@db/h"}, "HOKUSAI_DATABASE_URL: no installed driver for mysql:// URLs"),
        ({"HOKUSAI_MLFLOW_DATABASE_URL": "oracle://u:pw@db/m"}, "HOKUSAI_MLFLOW_DATABASE_URL: no installed driver"),
        ({"HOKUSAI_MLFLOW_AUTH_DATABASE_URL": "x\ny"}, "HOKUSAI_MLFLOW_AUTH_DATABASE_URL: must be on one line"),
        ({"HOKUSAI_MLFLOW_ARTIFACTS_DESTINATION": "gs://b/p"}, "HOKUSAI_MLFLOW_ARTIFACTS_DESTINATION: must be a local"),
        ({"HOKUSAI_MLFLOW_ARTIFACTS_DESTINATION": "s3:///no-bucket"}, "must be a local directory or an s3://BUCKET"),
        ({"HOKUSAI_MLFLOW_S3_ENDPOINT_URL": "minio:9000"}, "HOKUSAI_MLFLOW_S3_ENDPOINT_URL: must be an http://"),
        (
            {"HOKUSAI_MLFLOW_URL": "http://m:5000", "HOKUSAI_MLFLOW_DATABASE_URL": "postgresql://u@db/m"},
            "HOKUSAI_MLFLOW_DATABASE_URL only apply to the embedded MLflow",
        ),
        (
            {
                "HOKUSAI_DATABASE_URL": "postgresql://a:x@db:5432/one",
                "HOKUSAI_MLFLOW_DATABASE_URL": "postgresql://b@db:5432/one",
            },
            "HOKUSAI_DATABASE_URL and HOKUSAI_MLFLOW_DATABASE_URL name the same database",
        ),
        (
            {"HOKUSAI_MLFLOW_AUTH_DATABASE_URL": "sqlite:///./data/mlflow/mlflow.db", "HOKUSAI_DATA_DIR": "data"},
            "HOKUSAI_MLFLOW_DATABASE_URL and HOKUSAI_MLFLOW_AUTH_DATABASE_URL name the same database",
        ),
        ({"HOKUSAI_PORT": "8123", "HOKUSAI_MLFLOW_PORT": "8123"}, "HOKUSAI_MLFLOW_PORT must differ from HOKUSAI_PORT"),
        (
            {"HOKUSAI_UPSTREAM_MAX_CONNECTIONS": "5", "HOKUSAI_UPSTREAM_MAX_CONNECTIONS_PER_USER": "50"},
            "HOKUSAI_UPSTREAM_MAX_CONNECTIONS_PER_USER must be at most HOKUSAI_UPSTREAM_MAX_CONNECTIONS",
        ),
    ],
)
def test_settings_that_would_fail_later_are_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], problem: str
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)

    with pytest.raises(HokusaiConfigurationError) as refused:
        load_settings(_env_file=None)

    assert problem in str(refused.value)
    assert refused.value.__cause__ is None  # pydantic's error, which quotes every value, is not chained


def test_variables_nothing_reads_are_named_as_likely_typos(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("HOKUSAI_LOG_LEVLE=debug\nHOKUSAI_PORT=8001\n")
    environ = {"HOKUSAI_PROT": "1", "HOKUSAI_API_KEY": "k", "HOKUSAI_HOME": "/h", "HOKUSAI_PORT": "8001", "PATH": "/"}

    assert unknown_variables(environ, env_file) == ["HOKUSAI_LOG_LEVLE", "HOKUSAI_PROT"]
    assert unknown_variables({"HOKUSAI_MOCK_MODE": "1"}, tmp_path / "none") == []


def test_the_offline_cli_never_prints_a_secret_setting(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOKUSAI_")}
    env |= {"HOKUSAI_DATA_DIR": str(tmp_path), "HOKUSAI_MLFLOW_PASSWORD": "hunter2-secret-password"}
    env["HOKUSAI_MLFLOW_ADMIN_PASSWORD"] = "SuperSecretAdminPw123\nx"

    result = subprocess.run(
        [sys.executable, "-m", "hokusai", "keys", "list", "--all", "--offline"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert result.returncode == 1
    assert result.stderr.startswith("Configuration problem: HOKUSAI_MLFLOW_ADMIN_PASSWORD: must be on one line")
    assert "hunter2" not in result.stderr and "SuperSecret" not in result.stderr and "Traceback" not in result.stderr


def test_the_apis_own_mlflow_calls_wait_the_call_timeout_not_the_artifact_one() -> None:
    from hokusai.server.upstream import build_client

    settings = Settings(_env_file=None, upstream_call_timeout_seconds=7, upstream_read_timeout_seconds=600)  # type: ignore[call-arg]
    timeout = build_client("http://127.0.0.1:1", settings).timeout  # never used, so nothing to close
    assert (timeout.read, timeout.write) == (7, 7)
