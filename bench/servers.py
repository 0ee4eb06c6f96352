"""Starting and stopping the servers under test: plain MLflow, `hokusai server` (both modes), stock basic-auth MLflow,
and the two references measured beside the gateway (the floor proxy and the TCP relay).

Every server binds to 127.0.0.1 on a free port, runs in a session (process group) of its own, logs to a file in
its work dir, and is stopped with SIGTERM to its group, then SIGKILL, then a by-pid sweep of any descendant that
outlived it (the embedded MLflow of `hokusai server` runs in a session of its own).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from hokusai.server.runner import free_loopback_port
from hokusai.server.upstream import basic_authorization

STARTUP_TIMEOUT_SECONDS = 180.0
STOP_TIMEOUT_SECONDS = 30.0


class ServerStartError(RuntimeError):
    """A server did not become ready; the message quotes the end of its log."""


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without any HOKUSAI_/MLFLOW_ setting, telemetry off, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOKUSAI_", "MLFLOW_"))}
    env.update({"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"})
    env.update(extra)
    return env


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    ready_paths: tuple[str, ...] = ("/health",)
    info: dict[str, str] = field(default_factory=dict)
    _family: dict[int, psutil.Process] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT_SECONDS) -> float:
        """Poll the readiness paths until all answer 200; returns the seconds it took."""
        started = time.monotonic()
        deadline = started + timeout
        with httpx.Client(timeout=5.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise ServerStartError(
                        f"{self.name} exited with code {self.process.returncode}:\n{self.log_tail()}"
                    )
                try:
                    if all(client.get(self.url + path).status_code == 200 for path in self.ready_paths):
                        self.remember_family()
                        return time.monotonic() - started
                except httpx.HTTPError:
                    pass
                time.sleep(0.25)
        raise ServerStartError(f"{self.name} was not ready within {timeout:.0f} s:\n{self.log_tail()}")

    def remember_family(self) -> None:
        """Record every descendant, so that one that escapes our process group is still stopped by pid."""
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(self.pid)
            for proc in [root, *root.children(recursive=True)]:
                self._family.setdefault(proc.pid, proc)

    def child_pids(self) -> list[int]:
        with contextlib.suppress(psutil.Error):
            return [child.pid for child in psutil.Process(self.pid).children()]
        return []

    def family_rss_mb(self) -> float:
        self.remember_family()
        total = 0
        for proc in self._family.values():
            with contextlib.suppress(psutil.Error):
                if proc.is_running():
                    total += proc.memory_info().rss
        return total / 1e6

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        self.remember_family()
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)  # stragglers left in the group
        survivors = []
        for proc in self._family.values():
            with contextlib.suppress(psutil.Error):
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    proc.terminate()
                    survivors.append(proc)
        _gone, alive = psutil.wait_procs(survivors, timeout=10)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()


def _spawn(name: str, command: list[str], env: dict[str, str], workdir: Path) -> tuple[subprocess.Popen[bytes], Path]:
    log_path = workdir / f"{name}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir,  # never /work/main: `hokusai server` would read its `.env`
            start_new_session=True,
        )
    return process, log_path


def _start(server: Server) -> Server:
    try:
        server.info["startup_seconds"] = f"{server.wait_ready():.1f}"
    except BaseException:
        server.stop()
        raise
    return server


def start_plain_mlflow(workdir: Path) -> Server:
    """`mlflow server`, no auth, one worker, job execution off, SQLite + local artifacts in `workdir`."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_loopback_port()
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--host", "127.0.0.1", "--port", str(port),
        "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
        "--artifacts-destination", str(workdir / "artifacts"),
        "--serve-artifacts",
        "--workers", "1",
    ]  # fmt: skip
    env = clean_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    process, log_path = _spawn("mlflow-plain", command, env, workdir)
    return _start(Server("mlflow-plain", port, process, log_path))


def create_key_offline(data_dir: Path, owner: str, scopes: str) -> str:
    """A key made by the CLI in a subprocess: the benchmark never imports hokusai.server for the HTTP phases."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hokusai",
            "keys",
            "create",
            "--offline",
            "--owner",
            owner,
            "--scopes",
            scopes,
            "--quiet",
        ],
        env=clean_env(HOKUSAI_DATA_DIR=str(data_dir)),
        cwd=data_dir.parent,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if result.returncode != 0:
        raise ServerStartError(f"hokusai keys create failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout.strip()


def start_hokusai(workdir: Path, name: str, *, mlflow_url: str | None = None) -> Server:
    """`hokusai server` with default settings: fronting `mlflow_url` (identity mode "none"), else embedded MLflow.

    A non-admin key (owner `bench`, read+write) is created offline first and left in `server.info["key"]`.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = workdir / "data"
    data_dir.mkdir(exist_ok=True)
    key = create_key_offline(data_dir, "bench", "read,write")
    port = free_loopback_port()
    extra = {"HOKUSAI_DATA_DIR": str(data_dir), "HOKUSAI_PORT": str(port)}
    if mlflow_url is not None:
        extra["HOKUSAI_MLFLOW_URL"] = mlflow_url
    else:
        extra["HOKUSAI_MLFLOW_PORT"] = str(free_loopback_port())
    command = [sys.executable, "-m", "hokusai", "server", "--port", str(port)]
    process, log_path = _spawn(name, command, clean_env(**extra), workdir)
    server = Server(name, port, process, log_path, ready_paths=("/health", "/ready"), info={"key": key})
    return _start(server)


def start_floor_proxy(workdir: Path, mlflow_url: str) -> Server:
    """The benchmark's reference pass-through (bench/floor_proxy.py) in front of `mlflow_url`, at `/api/mlflow`."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_loopback_port()
    command = [sys.executable, "-m", "bench.floor_proxy", str(port), mlflow_url]
    repo = Path(__file__).resolve().parent.parent
    process, log_path = _spawn("floor", command, clean_env(PYTHONPATH=str(repo)), workdir)
    return _start(Server("floor", port, process, log_path, ready_paths=("/api/mlflow/health",)))


def start_tcp_relay(workdir: Path, mlflow: Server) -> Server:
    """The benchmark's transfer floor (bench/tcp_relay.py): a TCP relay in front of `mlflow`, same paths."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_loopback_port()
    command = [sys.executable, "-m", "bench.tcp_relay", str(port), str(mlflow.port)]
    repo = Path(__file__).resolve().parent.parent
    process, log_path = _spawn("relay", command, clean_env(PYTHONPATH=str(repo)), workdir)
    return _start(Server("relay", port, process, log_path))


def start_basic_auth(workdir: Path) -> Server:
    """Stock `mlflow server --app-name basic-auth` with its default settings (4 workers, job execution on).

    Only what it cannot start without is set: the Flask secret, the admin password, and a `basic_auth.ini` (the
    stock file with `database_uri` moved into `workdir`). A non-admin user is created through `users/create`;
    its `Authorization` header is left in `server.info["authorization"]`.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    spec = importlib.util.find_spec("mlflow")  # located, not imported
    assert spec is not None and spec.origin is not None
    stock = Path(spec.origin).parent / "server" / "auth" / "basic_auth.ini"
    lines = []
    for line in stock.read_text().splitlines():
        if line.startswith("database_uri"):
            line = f"database_uri = sqlite:///{workdir / 'basic_auth.db'}"
        lines.append(line)
    config_path = workdir / "basic_auth.ini"
    config_path.write_text("\n".join(lines) + "\n")
    admin_password = secrets.token_urlsafe(18)
    port = free_loopback_port()
    command = [
        sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
        "--host", "127.0.0.1", "--port", str(port),
        "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
        "--artifacts-destination", str(workdir / "artifacts"),
        "--serve-artifacts",
    ]  # fmt: skip
    env = clean_env(
        MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_urlsafe(32),
        MLFLOW_AUTH_ADMIN_PASSWORD=admin_password,
        MLFLOW_AUTH_CONFIG_PATH=str(config_path),
    )
    process, log_path = _spawn("mlflow-basic-auth", command, env, workdir)
    server = _start(Server("mlflow-basic-auth", port, process, log_path))
    try:
        # /health answers as soon as one worker is up; /version needs credentials and proves the auth app is up.
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        admin = {"Authorization": basic_authorization("admin", admin_password)}
        with httpx.Client(base_url=server.url, headers=admin, timeout=60.0, trust_env=False) as client:
            while client.get("/version").status_code != 200:
                if time.monotonic() > deadline:
                    raise ServerStartError(f"basic-auth never accepted the admin:\n{server.log_tail()}")
                time.sleep(0.5)
            password = secrets.token_urlsafe(18)
            response = client.post("/api/2.0/mlflow/users/create", json={"username": "bench", "password": password})
            if response.status_code != 200:
                raise ServerStartError(f"users/create answered {response.status_code}: {response.text[:300]}")
        server.info["authorization"] = basic_authorization("bench", password)
        server.info["workers"] = "4 (default)"
    except BaseException:
        server.stop()
        raise
    return server
