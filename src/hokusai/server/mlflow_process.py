"""The embedded MLflow server: configured, started, watched and restarted as a child process of `hokusai server`."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from sqlalchemy.engine import make_url

from hokusai._private_files import ensure_private_dir, write_private_file
from hokusai.server.child_env import ASSERTION_SECRET_FILE_ENV, STORE_CACHE_ENV
from hokusai.server.secrets import PlatformSecrets
from hokusai.server.settings import Settings
from hokusai.server.upstream import MLFLOW_ADMIN_USERNAME

logger = logging.getLogger(__name__)

AUTH_FUNCTION = "hokusai.mlflow_auth:authenticate_request"
_STOP_GRACE_SECONDS = 10.0
_RESTART_BACKOFF_SECONDS = (1.0, 2.0, 5.0, 10.0)
_LOG_TAIL_LINES = 20  # of MLflow's log, quoted when it fails to start or exits
_PR_SET_PDEATHSIG = 1


# Loaded here, in the parent: the child of a threaded process may do next to nothing between fork and exec (finding
# libc by name would even start `ldconfig`).
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
# A child that crashes sooner than this after it was ready is restarted with a growing delay.
_STABLE_SECONDS = 60.0


def _die_with_parent(parent_pid: int) -> None:
    """Runs in the child before exec: on Linux, SIGTERM it when `hokusai server` dies, even by SIGKILL.

    The kernel ties this to the spawning thread; both spawners (main thread, watcher) live as long as the server. A
    parent that died before the call would never send the signal, so the child then ends at once.
    """
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent_pid:
            os._exit(1)


def _ini_value(value: str) -> str:
    """`value` as MLflow's auth config (a `configparser` with interpolation) reads it back: `%` doubled."""
    if "\n" in value or "\r" in value:
        raise ValueError("a value in MLflow's auth config cannot span lines")
    return value.replace("%", "%%")


def _backend_name(database_url: str) -> str:
    """What a database URL may show in a log: its kind, never its address or credentials."""
    return make_url(database_url).get_backend_name()


class MlflowStartError(RuntimeError):
    """The embedded MLflow did not come up; the message quotes the end of its log."""


class EmbeddedMlflow:
    """One `mlflow server --app-name basic-auth` child on a loopback port, restarted if it crashes."""

    def __init__(self, settings: Settings, platform_secrets: PlatformSecrets, port: int) -> None:
        self._settings = settings
        self._secrets = platform_secrets
        self.port = port
        self.home = ensure_private_dir(settings.mlflow_home)
        self.log_path = self.home / "mlflow.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        # Held while a child is spawned or stopped, so that `stop` never misses one the watcher is starting.
        self._lifecycle = threading.Lock()
        self._watcher: threading.Thread | None = None
        self.restarts = 0

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(port={self.port}, home={str(self.home)!r})"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def _write_config(self) -> tuple[Path, Path]:
        secret_path = self.home / "assertion_secret"
        write_private_file(secret_path, self._secrets.assertion_secret)
        config_path = self.home / "basic_auth.ini"
        write_private_file(
            config_path,
            "\n".join(
                [
                    "[mlflow]",
                    f"default_permission = {self._settings.mlflow_default_permission}",
                    f"database_uri = {_ini_value(self._settings.resolved_mlflow_auth_database_url.get_secret_value())}",
                    f"admin_username = {MLFLOW_ADMIN_USERNAME}",
                    f"admin_password = {_ini_value(self._secrets.mlflow_admin_password)}",
                    f"authorization_function = {AUTH_FUNCTION}",
                    "grant_default_workspace_access = false",
                    # Operators' Basic logins are checked with scrypt (~70 ms); cache the successes for a minute.
                    "auth_cache_max_size = 10000",
                    "auth_cache_ttl_seconds = 60",
                    "",
                ]
            ),
        )
        return config_path, secret_path

    def _command(self) -> list[str]:
        # The stores are named in the environment (`_environment`), not here: a database URL may carry a password,
        # and every local user can read a process's command line.
        return [
            sys.executable, "-m", "mlflow", "server",
            "--app-name", "basic-auth",
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--serve-artifacts",
            "--workers", str(self._settings.mlflow_workers),
        ]  # fmt: skip

    def _environment(self, config_path: Path, secret_path: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HOKUSAI_", "MLFLOW_"))}
        settings = self._settings
        env.update(
            {
                "MLFLOW_BACKEND_STORE_URI": settings.resolved_mlflow_database_url.get_secret_value(),
                "MLFLOW_ARTIFACTS_DESTINATION": settings.resolved_mlflow_artifacts_destination,
                "MLFLOW_AUTH_CONFIG_PATH": str(config_path),
                "MLFLOW_FLASK_SERVER_SECRET_KEY": self._secrets.flask_secret_key,
                ASSERTION_SECRET_FILE_ENV: str(secret_path),
                STORE_CACHE_ENV: str(self.home / "auth-cache.generation"),
                # GenAI job runners cost ~1.3 GB idle and nothing in Hokusai uses them.
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                # The gateway refuses MLflow's AI gateway routes, so the web UI must not offer them (server-info).
                "MLFLOW_ENABLE_AI_GATEWAY": "false",
                "MLFLOW_DISABLE_TELEMETRY": "true",
                "DO_NOT_TRACK": "true",
                # MLflow answers CORS with these; it lets pages on any localhost port write, which the gateway does not.
                "MLFLOW_SERVER_CORS_ALLOWED_ORIGINS": ",".join(settings.browser_origins),
            }
        )
        if settings.mlflow_s3_endpoint_url:
            # boto3 takes its credentials from the usual AWS_* variables (or ~/.aws), which pass through unchanged.
            env["MLFLOW_S3_ENDPOINT_URL"] = settings.mlflow_s3_endpoint_url
        return env

    def start(self) -> None:
        config_path, secret_path = self._write_config()
        self._spawn(config_path, secret_path)
        self.wait_ready(self._settings.mlflow_startup_timeout_seconds)
        self._watcher = threading.Thread(
            target=self._watch, args=(config_path, secret_path), daemon=True, name="mlflow-watch"
        )
        self._watcher.start()

    def _spawn(self, config_path: Path, secret_path: Path) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child writes to it for its whole life
        # A session of its own: Ctrl-C reaches only us, and we stop the whole group in order.
        self._process = subprocess.Popen(
            self._command(),
            env=self._environment(config_path, secret_path),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=self.home,
            preexec_fn=functools.partial(_die_with_parent, os.getpid()),
        )
        log.close()
        settings = self._settings
        logger.info(
            "started embedded MLflow (pid %s) on 127.0.0.1:%s; tracking store: %s, auth store: %s, artifacts: %s",
            self._process.pid,
            self.port,
            _backend_name(settings.resolved_mlflow_database_url.get_secret_value()),
            _backend_name(settings.resolved_mlflow_auth_database_url.get_secret_value()),
            settings.resolved_mlflow_artifacts_destination,
        )

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise MlflowStartError(f"MLflow exited with code {self._process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/health", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise MlflowStartError(
            f"MLflow did not answer on port {self.port} within {timeout:g} s (HOKUSAI_MLFLOW_STARTUP_TIMEOUT_SECONDS):"
            f"\n{self.log_tail()}"
        )

    def log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:])
        except OSError:
            return "(no MLflow log)"

    def _watch(self, config_path: Path, secret_path: Path) -> None:
        """Restart MLflow whenever it exits, for as long as the server runs, whatever goes wrong on the way."""
        attempt = 0
        while not self._stopping.is_set():
            assert self._process is not None
            watched_since = time.monotonic()
            code = self._process.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - watched_since >= _STABLE_SECONDS:
                attempt = 0
            delay = _RESTART_BACKOFF_SECONDS[min(attempt, len(_RESTART_BACKOFF_SECONDS) - 1)]
            attempt += 1
            logger.error("embedded MLflow exited unexpectedly (code %s); restarting in %.0f s", code, delay)
            self._kill_group(signal.SIGKILL)  # workers orphaned by the crash would keep the port
            if self._stopping.wait(delay):
                return
            self._restart(config_path, secret_path)

    def _restart(self, config_path: Path, secret_path: Path) -> None:
        try:
            with self._lifecycle:
                if self._stopping.is_set():
                    return
                self._spawn(config_path, secret_path)
            self.wait_ready(self._settings.mlflow_startup_timeout_seconds)
        except MlflowStartError:
            if self._stopping.is_set():
                return  # stopped while it was starting
            logger.exception("embedded MLflow failed to restart")
            self._kill_group(signal.SIGKILL)  # one that never answered is ended, so the watcher's wait returns
        except Exception:
            # Out of file descriptors or memory, say: the old (exited) process stays watched, so the watcher tries
            # again after its backoff instead of leaving the API without MLflow for good.
            logger.exception("embedded MLflow could not be started")
        else:
            self.restarts += 1
            logger.info("embedded MLflow is back (restart %d)", self.restarts)

    def _kill_group(self, sig: signal.Signals) -> None:
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, sig)

    def stop(self) -> None:
        with self._lifecycle:
            self._stopping.set()
        self._stop_process()
        if self._watcher is not None:
            self._watcher.join(_STOP_GRACE_SECONDS)

    def _stop_process(self) -> None:
        if self._process is None or self._process.poll() is not None:
            self._kill_group(signal.SIGKILL)
            return
        self._kill_group(signal.SIGTERM)
        try:
            self._process.wait(timeout=_STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            logger.warning("MLflow did not stop within %.0f s; killing it", _STOP_GRACE_SECONDS)
        self._kill_group(signal.SIGKILL)
        logger.info("embedded MLflow stopped")
