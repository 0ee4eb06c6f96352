"""Helpers for the live SDK tests: users with keys, a real run logged through the gateway, minimal subprocess envs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.platform import LivePlatform, hokusai_command

ACCURACY = 0.93  # the design note's baseline_value: the run logs exactly this, so registration confirms it
SUBPROCESS_TIMEOUT = 240.0
REPO = Path(__file__).parents[2]
QUICKSTART = REPO / "examples" / "quickstart.py"

# Logs two models in one run with the stock MLflow client (configured by environment variables only).
_LOG_RUN = textwrap.dedent(
    """
    import json, sys
    import mlflow, numpy as np, sklearn
    from sklearn.linear_model import LogisticRegression

    mlflow.set_experiment(sys.argv[1])
    x, y = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0, 0, 1, 1])
    # Stated, not inferred: inference loads the model in a subprocess and takes seconds.
    requirements = [f"scikit-learn=={{sklearn.__version__}}"]
    with mlflow.start_run() as run:
        mlflow.log_metric("accuracy", {accuracy})
        first = mlflow.sklearn.log_model(
            LogisticRegression().fit(x, y), name="model", pip_requirements=requirements
        )
        second = mlflow.sklearn.log_model(
            LogisticRegression(C=0.5).fit(x, y), name="challenger", pip_requirements=requirements
        )
    print(json.dumps({{"run_id": run.info.run_id, "experiment_id": run.info.experiment_id,
                      "model_id": first.model_id, "challenger_id": second.model_id}}))
    """
).format(accuracy=ACCURACY)

# Runs a script as __main__ after installing an audit hook that refuses (and reports) every internet connection
# and every name lookup of a host other than this one.
_OFFLINE_RUNNER = textwrap.dedent(
    """
    import runpy, socket, sys

    def refuse(event, args):
        if event == "socket.connect" and args[0].family in (socket.AF_INET, socket.AF_INET6):
            print(f"NETWORK ATTEMPT {args[1]!r}", file=sys.stderr, flush=True)
            raise ConnectionRefusedError(f"no network in this test: {args[1]!r}")
        if event == "socket.getaddrinfo" and args[0] not in (None, "localhost", "127.0.0.1", "::1", b"localhost"):
            print(f"NETWORK ATTEMPT (name lookup) {args[0]!r}", file=sys.stderr, flush=True)
            raise socket.gaierror(f"no network in this test: {args[0]!r}")

    sys.addaudithook(refuse)
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    runpy.run_path(script, run_name="__main__")
    """
)


@dataclass(frozen=True)
class User:
    owner: str
    key: str


@dataclass(frozen=True)
class LoggedRun:
    run_id: str
    experiment_id: str
    model_id: str
    challenger_id: str


def unique(stem: str) -> str:
    return f"{stem}-{uuid.uuid4().hex[:10]}"


def new_user(platform: LivePlatform, stem: str, scopes: str = "read,write") -> User:
    owner = platform.unique_owner(stem)
    return User(owner, platform.create_key(owner, scopes))


def log_run(platform: LivePlatform, user: User) -> LoggedRun:
    """A run of `user`'s in an experiment of their own, with an `accuracy` metric and two logged sklearn models."""
    env = platform.mlflow_env(user.key)
    result = subprocess.run(
        [sys.executable, "-c", _LOG_RUN, unique(f"sdk-{user.owner}")],
        env=env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT, cwd=platform.data_dir.parent,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return LoggedRun(**json.loads(result.stdout.strip().splitlines()[-1]))


def revoke(platform: LivePlatform, key: str) -> None:
    """Revoke `key` through the API (admin key); the server forgets it at once."""
    with platform.client(key) as client:
        key_id = client.get("/api/v1/auth/whoami").json()["key_id"]
    with platform.client(platform.admin_key) as admin:
        admin.delete(f"/api/v1/keys/{key_id}").raise_for_status()
    with platform.client(key) as client:
        assert client.get("/api/v1/auth/whoami").status_code == 401


def token_holder(platform: LivePlatform, token_id: str) -> dict[str, object]:
    """`GET /api/v1/tokens/<id>` as the admin: the model and the owner holding a token."""
    with platform.client(platform.admin_key) as admin:
        response = admin.get(f"/api/v1/tokens/{token_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def registered_model(platform: LivePlatform, key: str, name: str) -> dict[str, object]:
    """The registered model and its versions, read through the gateway's MLflow REST API."""
    with platform.client(key) as client:
        response = client.get("/api/mlflow/api/2.0/mlflow/model-versions/search", params={"filter": f"name='{name}'"})
    assert response.status_code == 200, response.text
    return dict(response.json())


def minimal_env(home: Path, **values: str) -> dict[str, str]:
    """Only what the brief allows: the given HOKUSAI_* values plus a private HOME and HOKUSAI_HOME."""
    home.mkdir(parents=True, exist_ok=True)
    return {"HOME": str(home), "HOKUSAI_HOME": str(home / ".hokusai"), **values}


def run_script(
    path: Path | str, env: dict[str, str], cwd: Path, *args: str, offline: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run a Python file in a fresh interpreter; `offline` refuses every internet connection it attempts."""
    command = (
        [sys.executable, "-c", _OFFLINE_RUNNER, str(path), *args] if offline else [sys.executable, str(path), *args]
    )
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)


def hokusai_cli(
    env: dict[str, str], *args: str, cwd: Path | None = None, answer: str = ""
) -> subprocess.CompletedProcess[str]:
    """The `hokusai` command in a fresh interpreter; wide columns so rich tables do not truncate cells.

    `answer` is all its standard input holds, so a question it asks never waits on the terminal of the test run.
    """
    return subprocess.run(
        hokusai_command(*args), env={**env, "COLUMNS": "250"}, cwd=cwd, input=answer, capture_output=True,
        text=True, timeout=SUBPROCESS_TIMEOUT,
    )  # fmt: skip


def whoami_status(platform: LivePlatform, key: str) -> int:
    return httpx.get(platform.url + "/api/v1/auth/whoami", headers={"Authorization": f"Bearer {key}"}).status_code


def scrubbed_environ() -> dict[str, str]:
    """This process's environment without Hokusai or MLflow settings (for CLI runs that need PATH and friends)."""
    return {name: value for name, value in os.environ.items() if not name.startswith(("HOKUSAI_", "MLFLOW_"))}
