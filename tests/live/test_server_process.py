"""`hokusai server` as a process: first start, secrets on disk, stop with its child, port in use, crash and restart,
and no key material in any log of a full run."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from hokusai.server.runner import free_loopback_port
from tests.support.platform import LivePlatform, base_env, hokusai_command, spawn_platform, start_platform

KEY_PATTERN = re.compile(r"hk_live_[A-Za-z0-9]{32,}")


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivePlatform]:
    """A platform started on an empty data dir, so it creates its secrets and prints its first admin key."""
    live = start_platform(tmp_path_factory.mktemp("fresh") / "data", admin_key=False)
    try:
        yield live
    finally:
        live.stop()


def _first_admin_key(live: LivePlatform) -> str:
    return (live.data_dir / "first-admin-key").read_text().strip()


def test_first_start_names_the_admin_keys_private_file_and_the_lines_to_paste(fresh: LivePlatform) -> None:
    """Its standard output is a file here, as under a service manager: the key itself must stay out of it."""
    output = fresh.stdout_path.read_text()
    key_file = fresh.data_dir / "first-admin-key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = _first_admin_key(fresh)
    assert KEY_PATTERN.fullmatch(key)
    assert not KEY_PATTERN.search(output)
    assert f"export HOKUSAI_API_KEY=$(cat {shlex.quote(str(key_file))})" in output
    assert f"export HOKUSAI_API_URL={fresh.url}" in output
    assert f"export MLFLOW_TRACKING_URI={fresh.url}/api/mlflow" in output
    assert "export MLFLOW_TRACKING_TOKEN=<a user's key>" in output
    assert f" login --api-url {fresh.url}\n" in output  # a user's own key goes to `hokusai login`, not the admin's
    whoami = httpx.get(fresh.url + "/api/v1/auth/whoami", headers={"Authorization": f"Bearer {key}"}).json()
    assert whoami["owner"] == "admin" and whoami["is_admin"] is True


def test_secrets_are_private_files(fresh: LivePlatform) -> None:
    for path in (fresh.data_dir / "secrets.json", fresh.data_dir / "mlflow" / "assertion_secret",
                 fresh.data_dir / "mlflow" / "basic_auth.ini"):  # fmt: skip
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(fresh.data_dir.stat().st_mode) == 0o700
    # The databases (keys' hashes, MLflow's users), MLflow's log and every other file are private too.
    written = [fresh.data_dir / "hokusai.db", fresh.data_dir / "mlflow" / "basic_auth.db", fresh.mlflow_log_path]
    assert all(path.exists() for path in written), written
    shared = [path for path in fresh.data_dir.rglob("*") if stat.S_IMODE(path.stat().st_mode) & 0o077]
    assert shared == []


def test_port_in_use_gives_one_clear_line(fresh: LivePlatform, tmp_path: Path) -> None:
    result = subprocess.run(
        hokusai_command("server", "--port", str(fresh.port)), env=base_env(tmp_path / "other"),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert f"Port {fresh.port} on 127.0.0.1 is already in use; choose another with --port" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_second_server_on_the_same_data_dir_is_refused(fresh: LivePlatform) -> None:
    # Two would run two MLflows on one SQLite store, with the per-token locks of each process apart.
    result = subprocess.run(
        hokusai_command("server", "--port", str(free_loopback_port())), env=base_env(fresh.data_dir),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    expected = f"Another Hokusai server (pid {fresh.process.pid}) is running on the data directory {fresh.data_dir}"
    assert expected in result.stderr and "Traceback" not in result.stderr


def test_a_taken_mlflow_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    """A server already there would have answered MLflow's readiness check and been sent the signed assertions."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            hokusai_command("server", "--port", str(free_loopback_port())),
            env=base_env(tmp_path / "data", HOKUSAI_MLFLOW_PORT=str(port)), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 1
    assert f"Port {port} on 127.0.0.1 is already in use; choose another with HOKUSAI_MLFLOW_PORT" in result.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: (root / "data").write_text("a file"), "(HOKUSAI_DATA_DIR) cannot be used: File exists"),
        (lambda root: _secrets_file(root, "[]"), "secrets.json is not a secrets file Hokusai wrote"),
        (lambda root: _secrets_file(root, "{not json"), "secrets.json is not a secrets file Hokusai wrote"),
    ],
    ids=["a-file", "a-list", "not-json"],
)
def test_an_unusable_data_dir_or_secrets_file_is_one_clear_line(
    tmp_path: Path, make: Callable[[Path], object], message: str
) -> None:
    make(tmp_path)
    result = subprocess.run(
        hokusai_command("server", "--port", str(free_loopback_port())), env=base_env(tmp_path / "data"),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith("Error: ") and message in result.stderr and "Traceback" not in result.stderr


def _secrets_file(root: Path, content: str) -> None:
    (root / "data").mkdir(mode=0o700)  # as Hokusai makes it: the secrets file is the only problem
    (root / "data" / "secrets.json").write_text(content)


def test_a_stop_while_mlflow_starts_stops_both_cleanly(tmp_path: Path) -> None:
    live = spawn_platform(tmp_path / "data", admin_key=False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not live.mlflow_child_pids():
        time.sleep(0.1)
    assert live.mlflow_child_pids(), "MLflow never started"
    pids = live.mlflow_child_pids()

    assert live.stop() == 0
    assert "Traceback" not in live.stderr_path.read_text()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _alive(pids):
        time.sleep(0.5)
    assert _alive(pids) == []


def test_crashed_mlflow_child_is_reported_and_restarted(fresh: LivePlatform) -> None:
    pids = fresh.mlflow_child_pids()
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and "embedded MLflow is back" not in fresh.stderr_path.read_text():
        time.sleep(0.5)
    log = fresh.stderr_path.read_text()
    assert "embedded MLflow exited unexpectedly" in log
    assert "embedded MLflow is back" in log
    assert httpx.get(fresh.url + "/ready", timeout=10).status_code == 200
    assert set(fresh.mlflow_child_pids()).isdisjoint(pids)


def test_no_key_material_in_logs_of_a_full_run(fresh: LivePlatform) -> None:
    admin = _first_admin_key(fresh)
    with httpx.Client(base_url=fresh.url, headers={"Authorization": f"Bearer {admin}"}) as client:
        user = client.post("/api/v1/keys", json={"owner": "logcheck", "scopes": ["read", "write"]}).json()
        rotated = client.post(f"/api/v1/keys/{user['id']}/rotate").json()
    keys = {admin, user["key"], rotated["key"]}
    # Keys in the places they must never be used: the URL, a wrong scheme, a revoked key, the MLflow client.
    httpx.get(fresh.url + "/api/v1/auth/whoami", params={"api_key": rotated["key"]})
    httpx.get(fresh.url + "/api/mlflow/api/2.0/mlflow/experiments/search", params={"api_key": rotated["key"]})
    httpx.get(fresh.url + "/api/v1/auth/whoami", headers={"Authorization": f"Token {rotated['key']}"})
    httpx.get(fresh.url + "/api/v1/auth/whoami", headers={"Authorization": f"Bearer {user['key']}"})
    script = "import mlflow; mlflow.set_experiment('logcheck'); mlflow.start_run(); mlflow.log_metric('m', 1.0)"
    result = fresh.run_python(script, fresh.mlflow_env(rotated["key"]))
    assert result.returncode == 0, result.stderr
    assert fresh.stop() == 0

    logs = {
        "server stderr": fresh.stderr_path.read_text(),
        "mlflow log": fresh.mlflow_log_path.read_text(errors="replace"),
    }
    for name, text in logs.items():
        assert "GET /api/v1/auth/whoami" in text or name == "mlflow log"
        assert not KEY_PATTERN.search(text), f"key material in the {name}"
        for key in keys:
            assert key not in text and key[8:] not in text, f"a key appears in the {name}"
    # Control-plane calls (user provisioning, readiness) are not logged with their URLs and filters either.
    assert "provisioned MLflow user logcheck" in logs["server stderr"]
    assert "HTTP Request:" not in logs["server stderr"]
    assert not KEY_PATTERN.search(fresh.stdout_path.read_text())


def test_sigterm_stops_the_server_and_its_mlflow_child(fresh: LivePlatform) -> None:
    fresh.stop()
    assert fresh.process.returncode == 0
    assert fresh.mlflow_child_pids() == []
    assert "embedded MLflow stopped" in fresh.stderr_path.read_text()


def test_a_request_cut_off_at_the_end_of_the_shutdown_grace_is_one_log_line(tmp_path: Path) -> None:
    live = start_platform(tmp_path / "data", HOKUSAI_SHUTDOWN_TIMEOUT_SECONDS="1")
    upload = socket.create_connection(("127.0.0.1", live.port), timeout=10)
    try:
        # An upload whose body stops coming: the request is still running when the grace period ends.
        upload.sendall(
            b"PUT /api/mlflow/api/2.0/mlflow-artifacts/artifacts/0/stalled/file HTTP/1.1\r\n"
            + f"Host: 127.0.0.1\r\nAuthorization: Bearer {live.admin_key}\r\nContent-Length: 1000\r\n\r\n".encode()
            + b"first bytes"
        )
        time.sleep(0.5)
        assert live.stop() == 0
    finally:
        upload.close()

    log = live.stderr_path.read_text()
    assert "A running request was cancelled: Task cancelled, timeout graceful shutdown exceeded" in log, log[-3000:]
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-3000:]


def test_sigkilled_server_leaves_no_mlflow_process_behind(tmp_path: Path) -> None:
    """A SIGKILL gives the server no chance to clean up: MLflow, its supervisor and both workers must still go."""
    live = start_platform(tmp_path / "data", admin_key=False)
    pids = live.mlflow_child_pids()
    assert len(pids) >= 3, pids  # the `mlflow server` process, uvicorn's supervisor, the workers
    live.process.kill()
    live.process.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _alive(pids):
        time.sleep(0.5)
    survivors = _alive(pids)
    for pid in survivors:  # never leave them running, even when the assertion below fails
        os.kill(pid, signal.SIGKILL)
    assert survivors == []


def _alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive
