"""Every SDK test gets a private HOKUSAI_HOME and HOME, no Hokusai or MLflow settings, and no real sleeping."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import string
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hokusai import _client, _credentials, config
from hokusai._local import create_local_store

_ENV_PREFIXES = ("HOKUSAI_", "MLFLOW_TRACKING_")

Answer = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


@pytest.fixture(autouse=True)
def hokusai_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for name in [name for name in os.environ if name.startswith(_ENV_PREFIXES)]:
        monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HOKUSAI_HOME", str(tmp_path / "hokusai"))
    monkeypatch.setenv("COLUMNS", "200")  # rich tables: no truncated cells in assertions
    monkeypatch.setattr(config, "_OWN_ENV", {})
    monkeypatch.setattr(_credentials, "_configured", {})
    yield tmp_path / "hokusai"
    # The code under test writes MLflow variables straight into os.environ (that is its job):
    # drop them before monkeypatch restores the originals, so no test sees another's.
    for name in [name for name in os.environ if name.startswith(_ENV_PREFIXES)]:
        del os.environ[name]


@pytest.fixture(autouse=True)
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The backoff delays the client asked for; nothing actually sleeps."""
    recorded: list[float] = []
    monkeypatch.setattr(_client, "_sleep", recorded.append)
    return recorded


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any attempt to open an internet socket."""

    def refuse(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"unexpected network connection to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


class FakeAPI:
    """An ``httpx.MockTransport`` that answers requests in order and keeps every request it saw."""

    def __init__(self, *answers: Answer) -> None:
        self.requests: list[httpx.Request] = []
        self._answers = list(answers)
        self.transport = httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert self._answers, f"unexpected request {request.method} {request.url}"
        answer = self._answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer(request) if callable(answer) else answer


def error(status: int, error_code: str, message: str, *, layer: str = "hokusai-api", **headers: str) -> httpx.Response:
    """A response in the server's error envelope."""
    body = {"error_code": error_code, "message": message, "layer": layer}
    return httpx.Response(status, json=body, headers={name.replace("_", "-"): value for name, value in headers.items()})


# Made per test session, never a literal: a committed key-shaped string trips secret scanners (and ours).
KEY = "hk_live_" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(40))


@pytest.fixture(scope="session")
def mlflow_store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An initialised MLflow SQLite store, created once: building the schema takes seconds."""
    directory = tmp_path_factory.mktemp("mlflow-template")
    # As the SDK makes it: the Default experiment's artifacts in the store's directory (every copy keeps that root,
    # so the tests' runs write their artifacts under the template, never into the checkout).
    create_local_store(directory)
    return directory / "mlflow.db"


@pytest.fixture
def mock_store(hokusai_home: Path, mlflow_store_template: Path) -> Path:
    """``$HOKUSAI_HOME/mock`` holding a fresh copy of the initialised store."""
    store = hokusai_home / "mock"
    store.mkdir(parents=True)
    shutil.copy(mlflow_store_template, store / "mlflow.db")
    return store
