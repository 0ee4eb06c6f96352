"""The embedded MLflow's configuration files and its supervisor, without starting MLflow."""

from __future__ import annotations

import configparser
import os
import stat
import threading
from pathlib import Path

import pytest
from pydantic import ValidationError

from hokusai.server import mlflow_process
from hokusai.server.mlflow_process import EmbeddedMlflow
from hokusai.server.secrets import load_or_create_secrets
from hokusai.server.settings import Settings


def _embedded(tmp_path: Path, **settings: object) -> EmbeddedMlflow:
    configured = Settings(_env_file=None, data_dir=tmp_path / "data", **settings)  # type: ignore[arg-type]
    return EmbeddedMlflow(configured, load_or_create_secrets(configured), port=5999)


def test_a_percent_sign_reaches_mlflow_as_written(tmp_path: Path) -> None:
    # MLflow reads its auth config with configparser's interpolation, where a bare % fails to start the server.
    embedded = _embedded(tmp_path / "100%", mlflow_admin_password="s3cr%t-and-long-enough")
    config_path, _ = embedded._write_config()

    config = configparser.ConfigParser()
    config.read(config_path)

    assert config["mlflow"]["admin_password"] == "s3cr%t-and-long-enough"
    assert config["mlflow"]["database_uri"] == f"sqlite:///{embedded.home / 'basic_auth.db'}"
    assert "100%" in config["mlflow"]["database_uri"]


def test_the_stores_are_named_in_the_environment_never_on_the_command_line(tmp_path: Path) -> None:
    # A database URL may carry a password, and any local user can read a process's arguments (`ps`).
    database = "postgresql+psycopg://mlflow:pw-in-url-123@db.internal:5432/mlflow"
    auth_database = "postgresql+psycopg://mlflow:pw-in-url-123@db.internal:5432/mlflow_auth"
    embedded = _embedded(
        tmp_path,
        mlflow_database_url=database,
        mlflow_auth_database_url=auth_database,
        mlflow_artifacts_destination="s3://bucket/prefix",
        mlflow_s3_endpoint_url="http://minio.internal:9000",
    )
    config_path, secret_path = embedded._write_config()
    env = embedded._environment(config_path, secret_path)
    config = configparser.ConfigParser()
    config.read(config_path)

    assert not any("pw-in-url-123" in argument or "s3://" in argument for argument in embedded._command())
    assert env["MLFLOW_BACKEND_STORE_URI"] == database
    assert env["MLFLOW_ARTIFACTS_DESTINATION"] == "s3://bucket/prefix"
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio.internal:9000"
    assert config["mlflow"]["database_uri"] == auth_database
    assert stat.S_IMODE(config_path.stat().st_mode) == 0o600


def test_by_default_the_embedded_mlflow_keeps_everything_in_the_data_dir(tmp_path: Path) -> None:
    embedded = _embedded(tmp_path)
    env = embedded._environment(*embedded._write_config())

    assert env["MLFLOW_BACKEND_STORE_URI"] == f"sqlite:///{embedded.home / 'mlflow.db'}"
    assert env["MLFLOW_ARTIFACTS_DESTINATION"] == str(embedded.home / "artifacts")
    assert "MLFLOW_S3_ENDPOINT_URL" not in env


def test_a_relative_artifacts_directory_is_the_working_directorys_not_mlflows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    embedded = _embedded(tmp_path, mlflow_artifacts_destination="shared/artifacts")

    assert embedded._environment(*embedded._write_config())["MLFLOW_ARTIFACTS_DESTINATION"] == str(
        tmp_path / "shared" / "artifacts"
    )


def test_an_admin_password_on_two_lines_is_refused() -> None:
    with pytest.raises(ValidationError, match="must be on one line"):
        Settings(_env_file=None, mlflow_admin_password="first\nauthorization_function = evil:f")


def test_the_assertion_secret_loses_surrounding_whitespace() -> None:
    # The MLflow side reads the secret file stripped; a trailing newline from a mounted secret must not differ.
    secret = "s" * 40
    assert Settings(_env_file=None, assertion_secret=secret + "\n").assertion_secret.get_secret_value() == secret  # type: ignore[union-attr]


class _FakeProcess:
    """A child that has exited (`exited=True`) or runs until `end()`."""

    def __init__(self, *, exited: bool) -> None:
        self.pid = -1
        self._done = threading.Event()
        if exited:
            self._done.set()

    def wait(self, timeout: float | None = None) -> int:
        self._done.wait(timeout)
        return 1

    def poll(self) -> int | None:
        return 1 if self._done.is_set() else None

    def end(self) -> None:
        self._done.set()


def test_the_supervisor_outlives_a_failed_spawn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A restart that cannot even start a process (out of file descriptors, say) is tried again after the backoff."""
    monkeypatch.setattr(mlflow_process, "_RESTART_BACKOFF_SECONDS", (0.01,))
    embedded = _embedded(tmp_path)
    embedded._process = _FakeProcess(exited=True)  # type: ignore[assignment]
    running = _FakeProcess(exited=False)
    spawns: list[str] = []

    def spawn(_config: Path, _secret: Path) -> None:
        if not spawns:
            spawns.append("failed")
            raise OSError(24, "Too many open files")
        spawns.append("started")
        embedded._process = running  # type: ignore[assignment]

    monkeypatch.setattr(embedded, "_spawn", spawn)
    monkeypatch.setattr(embedded, "wait_ready", lambda _timeout: None)
    monkeypatch.setattr(embedded, "_kill_group", lambda _signal: None)  # no real process group to signal
    watcher = threading.Thread(target=embedded._watch, args=(tmp_path, tmp_path), daemon=True)
    watcher.start()
    deadline = threading.Event()
    for _ in range(200):  # a bound against hanging, not a timing assertion
        if embedded.restarts:
            break
        deadline.wait(0.05)
    embedded._stopping.set()
    running.end()
    watcher.join(10)

    assert spawns == ["failed", "started"]
    assert embedded.restarts == 1
    assert not watcher.is_alive()


@pytest.mark.skipif(mlflow_process._LIBC is None, reason="parent-death signals are Linux only")
def test_the_child_ends_at_once_if_its_parent_is_already_gone() -> None:
    # In a forked child, as before exec: told a parent pid that is not its parent, it exits with 1.
    child = os.fork()
    if child == 0:
        mlflow_process._die_with_parent(os.getppid() + 1)
        os._exit(0)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 1


def test_browsers_may_write_only_from_the_apis_own_pages() -> None:
    local = Settings(port=8000)
    public = Settings(port=8000, public_url="https://hokusai.example.com/")

    assert local.browser_origins == ("http://127.0.0.1:8000", "http://localhost:8000")
    assert public.browser_origins == ("https://hokusai.example.com", "http://127.0.0.1:8000", "http://localhost:8000")
