"""A live Hokusai platform for tests: the real `hokusai server` process with its real embedded MLflow child."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from hokusai.server.runner import free_loopback_port

STARTUP_TIMEOUT_SECONDS = 180.0


def hokusai_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "hokusai", *args]


def base_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOKUSAI_", "MLFLOW_"))}
    env.update({"HOKUSAI_DATA_DIR": str(data_dir), "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"})
    env.update(extra)
    return env


def create_key_offline(data_dir: Path, owner: str, scopes: str, **env: str) -> str:
    result = subprocess.run(
        hokusai_command("keys", "create", "--offline", "--owner", owner, "--scopes", scopes, "--quiet"),
        env=base_env(data_dir, **env), capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    return result.stdout.strip()


@dataclass
class LivePlatform:
    data_dir: Path
    port: int
    mlflow_port: int
    process: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    admin_key: str = ""
    _key_counter: int = field(default=0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def tracking_uri(self) -> str:
        return self.url + "/api/mlflow"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def mlflow_log_path(self) -> Path:
        return self.data_dir / "mlflow" / "mlflow.log"

    def client(self, key: str | None = None, **kwargs: object) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60.0, **kwargs)  # type: ignore[arg-type]

    def create_key(self, owner: str, scopes: str = "read,write", **body: object) -> str:
        with self.client(self.admin_key) as client:
            response = client.post("/api/v1/keys", json={"owner": owner, "scopes": scopes.split(","), **body})
        response.raise_for_status()
        return str(response.json()["key"])

    def unique_owner(self, stem: str) -> str:
        self._key_counter += 1
        return f"{stem}{self._key_counter}-{os.getpid()}"

    def mlflow_env(self, key: str, *, basic: bool = False) -> dict[str, str]:
        env = base_env(self.data_dir, MLFLOW_TRACKING_URI=self.tracking_uri, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
        env.pop("HOKUSAI_DATA_DIR")
        if basic:
            env.update(MLFLOW_TRACKING_USERNAME="any-user", MLFLOW_TRACKING_PASSWORD=key)
        else:
            env["MLFLOW_TRACKING_TOKEN"] = key
        return env

    def run_python(self, code: str, env: dict[str, str], timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
        """Run `code` in a fresh interpreter: the stock `mlflow` client configured only by environment variables."""
        return subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout,
            cwd=self.data_dir.parent,
        )  # fmt: skip

    def mlflow_log_size(self) -> int:
        return self.mlflow_log_path.stat().st_size

    def mlflow_log_since(self, offset: int) -> str:
        with self.mlflow_log_path.open("rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace")

    def mlflow_child_pids(self) -> list[int]:
        """The embedded MLflow's processes: those started with its port, and their workers (spawned without it)."""
        output = subprocess.run(["pgrep", "-f", "--", f"--port {self.mlflow_port}"], capture_output=True, text=True)
        pids = {int(pid) for pid in output.stdout.split()}
        for pid in list(pids):
            with contextlib.suppress(psutil.Error):
                pids.update(child.pid for child in psutil.Process(pid).children(recursive=True))
        return sorted(pids)

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT_SECONDS, probe: str = "/ready") -> None:
        """Poll `probe` until it answers 200 (use "/health" to wait only for the API process)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"hokusai server exited early:\n{self.stderr_path.read_text()[-4000:]}")
            try:
                if httpx.get(self.url + probe, timeout=5.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"hokusai server not ready in {timeout:.0f} s:\n{self.stderr_path.read_text()[-4000:]}")

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_platform(data_dir: Path, *, admin_key: bool = True, **env: str) -> LivePlatform:
    """Start `hokusai server` and wait until it is ready."""
    platform = spawn_platform(data_dir, admin_key=admin_key, **env)
    try:
        platform.wait_ready()
    except BaseException:
        platform.stop()
        raise
    return platform


def spawn_platform(data_dir: Path, *, admin_key: bool = True, **env: str) -> LivePlatform:
    """Start `hokusai server` on free loopback ports without waiting; with `admin_key`, create one offline first."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # as Hokusai makes it (it warns about an open one)
    key = create_key_offline(data_dir, "admin", "read,write,admin", **env) if admin_key else ""
    port, mlflow_port = free_loopback_port(), free_loopback_port()
    stdout_path, stderr_path = data_dir.parent / f"{data_dir.name}.out", data_dir.parent / f"{data_dir.name}.err"
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        process = subprocess.Popen(
            hokusai_command("server", "--port", str(port)),
            env=base_env(data_dir, HOKUSAI_MLFLOW_PORT=str(mlflow_port), **env),
            stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=data_dir.parent,
        )  # fmt: skip
    return LivePlatform(data_dir, port, mlflow_port, process, stdout_path, stderr_path, admin_key=key)
