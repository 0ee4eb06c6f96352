"""Two `hokusai server` processes on one PostgreSQL, in front of one MLflow: the deployment the README calls bigger.

A registration the SDK retries while its first attempt is still running may reach the other process. Both must
take turns (PostgreSQL advisory lock, `hokusai.server.locks`), so the retry finds the version the first attempt
created instead of adding a twin.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.mlflow_server import MlflowServer, start_mlflow_server
from tests.support.platform import LivePlatform, base_env, hokusai_command, start_platform

pytestmark = pytest.mark.live

ATTEMPTS_PER_PROCESS = 3
ROUNDS = 4


@pytest.fixture
def mlflow(tmp_path: Path) -> Iterator[MlflowServer]:
    server = start_mlflow_server(tmp_path / "mlflow")
    try:
        yield server
    finally:
        server.stop()


def _shared_env(postgres_url: str, mlflow: MlflowServer) -> dict[str, str]:
    # One database, one MLflow and one key pepper: a key made by either process is valid in both.
    return {
        "HOKUSAI_DATABASE_URL": postgres_url,
        "HOKUSAI_MLFLOW_URL": mlflow.url,
        "HOKUSAI_KEY_PEPPER": secrets.token_urlsafe(32),
    }


def _key(data_dir: Path, env: dict[str, str]) -> str:
    data_dir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        hokusai_command("keys", "create", "--offline", "--owner", "alice", "--scopes", "read,write", "--quiet"),
        env=base_env(data_dir, **env), capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    return result.stdout.strip()


def _register_everywhere_at_once(clients: list[httpx.Client], round_number: int) -> list[httpx.Response]:
    body = {
        "model_uri": f"s3://bucket/churn-{round_number}",
        "model_name": f"churn-{round_number}",
        "token_id": f"CHURN-{round_number}",
        "metric_name": "accuracy",
        "baseline_value": 0.9,
    }
    attempts = [client for client in clients for _ in range(ATTEMPTS_PER_PROCESS)]
    with ThreadPoolExecutor(len(attempts)) as pool:
        return list(pool.map(lambda client: client.post("/api/v1/models/tokenized", json=body), attempts))


def _versions_in_mlflow(client: httpx.Client, model_name: str) -> list[str]:
    found = client.get("/api/mlflow/api/2.0/mlflow/model-versions/search", params={"filter": f"name = '{model_name}'"})
    assert found.status_code == 200, found.text
    return [version["version"] for version in found.json().get("model_versions", [])]


def test_a_registration_sent_to_both_processes_at_once_creates_one_version(
    tmp_path: Path, postgres_url: str, mlflow: MlflowServer
) -> None:
    env = _shared_env(postgres_url, mlflow)
    key = _key(tmp_path / "one" / "data", env)
    processes: list[LivePlatform] = []
    try:
        for name in ("one", "two"):
            processes.append(start_platform(tmp_path / name / "data", admin_key=False, **env))
        headers = {"Authorization": f"Bearer {key}"}
        clients = [httpx.Client(base_url=process.url, headers=headers, timeout=120) for process in processes]
        answers = [_register_everywhere_at_once(clients, round_number) for round_number in range(ROUNDS)]
        versions = [_versions_in_mlflow(clients[0], f"churn-{round_number}") for round_number in range(ROUNDS)]
        for client in clients:
            client.close()
    finally:
        for process in processes:
            process.stop()

    for round_answers in answers:
        assert all(answer.status_code in (200, 201) for answer in round_answers), [a.text for a in round_answers]
        assert [answer.status_code for answer in round_answers].count(201) == 1
        assert {answer.json()["version"] for answer in round_answers} == {"1"}
    assert versions == [["1"]] * ROUNDS


def test_text_postgresql_cannot_store_is_a_client_error_not_a_500(
    tmp_path: Path, postgres_url: str, mlflow: MlflowServer
) -> None:
    """PostgreSQL refuses NUL in text with an error, where SQLite finds no row: key ids and owners were 500s."""
    env = _shared_env(postgres_url, mlflow)
    key = _key(tmp_path / "data", env)
    process = start_platform(tmp_path / "data", admin_key=False, **env)
    try:
        with httpx.Client(base_url=process.url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
            revoke = client.delete("/api/v1/keys/%00")
            rotate = client.post("/api/v1/keys/key_%00/rotate")
            listing = client.get("/api/v1/keys", params={"owner": "\x00"})
            own = client.get("/api/v1/keys")
    finally:
        process.stop()

    assert [(answer.status_code, answer.json()["error_code"]) for answer in (revoke, rotate, listing)] == [
        (404, "RESOURCE_DOES_NOT_EXIST"),
        (404, "RESOURCE_DOES_NOT_EXIST"),
        (400, "INVALID_PARAMETER_VALUE"),
    ]
    assert [row["owner"] for row in own.json()["keys"]] == ["alice"]
