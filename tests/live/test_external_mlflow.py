"""Hokusai in front of an external MLflow: one with its stock basic-auth app (the gateway logs in with service
credentials, the setup that produced the original 403s), and one without authentication."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.mlflow_server import MlflowServer, start_mlflow_server
from tests.support.platform import LivePlatform, spawn_platform, start_platform

CLIENT_SCRIPT = """
import json, mlflow
mlflow.set_experiment("external-mode")
with mlflow.start_run() as run:
    mlflow.log_param("p", "v")
    mlflow.log_metric("accuracy", 0.91)
    mlflow.log_text("hello", "notes/hello.txt")
fetched = mlflow.get_run(run.info.run_id)
text = mlflow.artifacts.load_text(run.info.artifact_uri + "/notes/hello.txt")
print(json.dumps({"metric": fetched.data.metrics["accuracy"], "text": text, "user": fetched.info.user_id}))
"""


@pytest.fixture(scope="module")
def basic_auth_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MlflowServer, str]]:
    password = secrets.token_urlsafe(16)
    server = start_mlflow_server(tmp_path_factory.mktemp("ext-auth"), basic_auth_admin_password=password)
    try:
        yield server, password
    finally:
        server.stop()


def _platform(tmp: Path, **env: str) -> LivePlatform:
    return start_platform(tmp / "data", **env)


def _run_client(live: LivePlatform, basic: bool = False) -> dict[str, object]:
    key = live.create_key(live.unique_owner("ext"), "read,write")
    result = live.run_python(CLIENT_SCRIPT, live.mlflow_env(key, basic=basic))
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_external_basic_auth_mlflow_works_with_service_credentials(
    basic_auth_mlflow: tuple[MlflowServer, str], tmp_path: Path
) -> None:
    server, password = basic_auth_mlflow
    assert httpx.get(server.url + "/version").status_code == 401  # MLflow itself demands credentials
    live = _platform(
        tmp_path, HOKUSAI_MLFLOW_URL=server.url, HOKUSAI_MLFLOW_USERNAME="admin", HOKUSAI_MLFLOW_PASSWORD=password
    )
    try:
        assert httpx.get(live.url + "/ready").json()["identity_mode"] == "service-account"
        summary = _run_client(live)
        assert summary["metric"] == 0.91 and summary["text"] == "hello"
        assert _run_client(live, basic=True)["metric"] == 0.91
    finally:
        live.stop()
    assert password not in live.stderr_path.read_text()


@pytest.mark.parametrize(
    ("credentials", "fix"),
    [
        (
            {"HOKUSAI_MLFLOW_USERNAME": "admin", "HOKUSAI_MLFLOW_PASSWORD": "no"},
            "check HOKUSAI_MLFLOW_USERNAME and HOKUSAI_MLFLOW_PASSWORD against MLflow's users",
        ),
        ({}, "it asks for a login and none is set: set HOKUSAI_MLFLOW_USERNAME and HOKUSAI_MLFLOW_PASSWORD"),
    ],
    ids=["wrong", "none"],
)
def test_credentials_mlflow_refuses_are_the_operators_to_fix_and_never_blamed_on_a_users_key(
    basic_auth_mlflow: tuple[MlflowServer, str], tmp_path: Path, credentials: dict[str, str], fix: str
) -> None:
    server, _password = basic_auth_mlflow
    live = spawn_platform(tmp_path / "data", HOKUSAI_MLFLOW_URL=server.url, **credentials)
    try:
        live.wait_ready(probe="/health")
        ready = httpx.get(live.url + "/ready")
        key = live.create_key(live.unique_owner("ext"), "read,write")
        with live.client(key) as user:
            refused = user.get("/api/mlflow/api/2.0/mlflow/experiments/search", params={"max_results": 1})
            registry = user.get("/api/v1/models/tokenized")
        client = live.run_python(CLIENT_SCRIPT, live.mlflow_env(key))
    finally:
        live.stop()

    assert ready.status_code == 503 and ready.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
    assert f"MLflow refused the gateway's credentials (401): {fix}" in ready.json()["message"]
    assert server.url not in ready.json()["message"]
    # The operator hears of it at start, before any user does.
    assert (
        f"the external MLflow is not ready for the gateway: MLflow refused the gateway's credentials (401): {fix}"
        in (live.stderr_path.read_text())
    )
    # Users are told their key is fine and whom to tell; no login prompt that could not help.
    for response in (refused, registry):
        assert response.status_code == 401 and response.json()["layer"] == "mlflow", response.text
        assert response.json()["message"].startswith("Your Hokusai key was accepted, but MLflow ")
        assert "www-authenticate" not in response.headers
    assert client.returncode != 0 and "Your Hokusai key was accepted" in client.stderr


def test_external_mlflow_without_auth(tmp_path: Path) -> None:
    server = start_mlflow_server(tmp_path / "plain")
    try:
        live = _platform(tmp_path, HOKUSAI_MLFLOW_URL=server.url)
        try:
            assert httpx.get(live.url + "/ready").json()["identity_mode"] == "none"
            summary = _run_client(live)
            assert summary["metric"] == 0.91 and summary["text"] == "hello"
            with live.client() as anonymous:
                assert anonymous.get("/api/mlflow/api/2.0/mlflow/experiments/search").status_code == 401
        finally:
            live.stop()
    finally:
        server.stop()
