"""A bigger deployment: the whole platform on a real PostgreSQL and an S3-compatible store, per-user isolation kept.

The Hokusai database, the embedded MLflow's tracking and registry store and its auth store (users, permissions) are
three databases on one PostgreSQL server, and MLflow's artifacts go to a bucket on an S3-compatible server (moto's, on
loopback); the stock `mlflow` client works through the gateway as each user, and MLflow's own permissions still keep
the users apart, across a restart of the platform.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from hokusai.server.runner import free_loopback_port
from tests.support.platform import LivePlatform, base_env, hokusai_command, start_platform
from tests.support.postgres import PostgresServer, find_bindir, fresh_database, running_server
from tests.support.s3_server import S3Server, running_s3_server
from tests.support.stock_client import CLIENT_TIMEOUT, FULL_WORKFLOW, client_summary

pytestmark = [pytest.mark.live, pytest.mark.postgres]

API = "/api/mlflow/api/2.0/mlflow"
ARTIFACTS = "/api/mlflow/api/2.0/mlflow-artifacts/artifacts"
# The server trusts local connections, so any password is accepted: it is there to be looked for where it must not be.
PASSWORD = "pg-pw-" + uuid.uuid4().hex


@pytest.fixture
def databases(postgres_server: PostgresServer) -> Iterator[dict[str, str]]:
    """HOKUSAI_DATABASE_URL and the embedded MLflow's two databases, each new, each URL carrying a password."""
    names = {
        "HOKUSAI_DATABASE_URL": f"hokusai_{uuid.uuid4().hex[:8]}",
        "HOKUSAI_MLFLOW_DATABASE_URL": f"mlflow_{uuid.uuid4().hex[:8]}",
        "HOKUSAI_MLFLOW_AUTH_DATABASE_URL": f"mlflow_auth_{uuid.uuid4().hex[:8]}",
    }
    with contextlib.ExitStack() as stack:
        urls = {
            variable: stack.enter_context(fresh_database(postgres_server, name)) for variable, name in names.items()
        }
        yield {
            variable: make_url(url).set(password=PASSWORD).render_as_string(hide_password=False)
            for variable, url in urls.items()
        }


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[S3Server]:
    with running_s3_server(tmp_path / "moto.log") as server:
        yield server


def _rows(url: str, query: str, **params: object) -> list[tuple[object, ...]]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(query), params)]
    finally:
        engine.dispose()


def _bobs_attempts_on(platform: LivePlatform, key: str, work: dict[str, str], model: str) -> list[tuple[int, str]]:
    """Status and layer of each of bob's writes to alice's experiment, run, artifacts and model."""
    experiment, run = work["experiment_id"], work["run_id"]
    with platform.client(key) as bob:
        answers = [
            bob.post(API + "/experiments/update", json={"experiment_id": experiment, "new_name": "x"}),
            bob.post(API + "/runs/log-metric", json={"run_id": run, "key": "m", "value": 1.0, "timestamp": 1}),
            bob.put(f"{ARTIFACTS}/{experiment}/{run}/artifacts/injected.txt", content=b"not yours"),
            bob.post(API + "/model-versions/create", json={"name": model, "source": f"runs:/{run}/model"}),
        ]
    return [(answer.status_code, answer.json().get("layer")) for answer in answers]


REFUSED_BY_MLFLOW = [(403, "mlflow")] * 4


def _mlflow_command_lines(platform: LivePlatform) -> list[str]:
    lines = []
    for pid in platform.mlflow_child_pids():
        with contextlib.suppress(psutil.Error):
            lines.append(" ".join(psutil.Process(pid).cmdline()))
    return lines


def _refused_start(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`hokusai server` with `env`, expected to stop before it starts anything."""
    environment = base_env(tmp_path / "data", **env)
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        if variable not in env:
            environment.pop(variable, None)
    return subprocess.run(
        hokusai_command("server", "--port", str(free_loopback_port())),
        env=environment, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_the_whole_platform_on_postgresql_and_s3_keeps_users_apart_across_a_restart(
    tmp_path: Path, databases: dict[str, str], s3: S3Server
) -> None:
    bucket = f"hokusai-{uuid.uuid4().hex[:8]}"
    s3.client().create_bucket(Bucket=bucket)
    stores = {
        **databases,
        "HOKUSAI_MLFLOW_ARTIFACTS_DESTINATION": f"s3://{bucket}/mlflow",
        "HOKUSAI_MLFLOW_S3_ENDPOINT_URL": s3.endpoint_url,
        **s3.client_environment(),
    }
    data_dir = tmp_path / "data"
    platform = start_platform(data_dir, **stores)
    try:
        alice, bob = platform.unique_owner("pg-alice-"), platform.unique_owner("pg-bob-")
        alice_key, bob_key = platform.create_key(alice), platform.create_key(bob)
        stem = alice.replace("-", "")
        workflow = platform.run_python(
            FULL_WORKFLOW.replace("sys.argv[1]", repr(stem)), platform.mlflow_env(alice_key), timeout=CLIENT_TIMEOUT
        )
        work = client_summary(workflow)
        model = f"{stem}-model"

        assert work["user_id"] == alice
        assert work["prediction"] == work["expected"]
        assert work["artifact_text"] == f"hello artifact {stem}"
        assert work["trace_span_names"] == [f"{stem}-span"]
        assert _bobs_attempts_on(platform, bob_key, work, model) == REFUSED_BY_MLFLOW
        command_lines = _mlflow_command_lines(platform)
        assert command_lines and not any(PASSWORD in line for line in command_lines)
    finally:
        platform.stop()

    # The artifacts are in the bucket, under the run, and nowhere in the data dir.
    listed = s3.client().list_objects_v2(Bucket=bucket, Prefix="mlflow/")
    keys = {item["Key"] for item in listed.get("Contents", [])}
    run_prefix = f"mlflow/{work['experiment_id']}/{work['run_id']}/artifacts/"
    assert run_prefix + "docs/notes.txt" in keys, sorted(keys)
    assert any(key.endswith("/MLmodel") for key in keys), sorted(keys)
    assert not any(f"{work['run_id']}/artifacts/injected.txt" in key for key in keys)
    assert not (data_dir / "mlflow" / "artifacts").exists()

    # Everything went to PostgreSQL: the run and its owner, MLflow's accounts and their permissions, the keys.
    mlflow_db, auth_db = databases["HOKUSAI_MLFLOW_DATABASE_URL"], databases["HOKUSAI_MLFLOW_AUTH_DATABASE_URL"]
    assert _rows(mlflow_db, "SELECT user_id FROM runs WHERE run_uuid = :run", run=work["run_id"]) == [(alice,)]
    users = {name for (name,) in _rows(auth_db, "SELECT username FROM users")}
    assert {alice, bob} <= users
    # MLflow 3.17 keeps a creator's MANAGE as a permission of a role of theirs.
    manage = (
        "SELECT u.username FROM role_permissions p JOIN user_role_assignments a ON a.role_id = p.role_id "
        "JOIN users u ON u.id = a.user_id WHERE p.resource_pattern = :model AND p.permission = 'MANAGE'"
    )
    assert _rows(auth_db, manage, model=model) == [(alice,)]
    owners = {owner for (owner,) in _rows(databases["HOKUSAI_DATABASE_URL"], "SELECT owner FROM api_keys")}
    assert {alice, bob} <= owners
    assert not (data_dir / "mlflow" / "mlflow.db").exists() and not (data_dir / "mlflow" / "basic_auth.db").exists()
    written = "".join(path.read_text(errors="replace") for path in (platform.stdout_path, platform.stderr_path,
                                                                     platform.mlflow_log_path))  # fmt: skip
    assert PASSWORD not in written and s3.secret_access_key not in written

    # A new start on the same stores finds the same users, keys, models, permissions and artifacts.
    restarted = start_platform(data_dir, admin_key=False, **stores)
    try:
        with restarted.client(alice_key) as as_alice:
            version = as_alice.get(API + "/model-versions/get", params={"name": model, "version": "1"})
            assert version.status_code == 200, version.text
            assert version.json()["model_version"]["run_id"] == work["run_id"]
            notes = as_alice.get(f"{ARTIFACTS}/{work['experiment_id']}/{work['run_id']}/artifacts/docs/notes.txt")
            assert notes.content == f"hello artifact {stem}".encode()
        assert _bobs_attempts_on(restarted, bob_key, work, model) == REFUSED_BY_MLFLOW
    finally:
        restarted.stop()


@pytest.mark.parametrize("variable", ["HOKUSAI_DATABASE_URL", "HOKUSAI_MLFLOW_DATABASE_URL"])
def test_a_database_that_cannot_be_reached_stops_the_start_in_one_line_naming_its_setting(
    tmp_path: Path, postgres_server: PostgresServer, variable: str
) -> None:
    missing = make_url(postgres_server.url("no_such_database")).set(password=PASSWORD).render_as_string(False)
    refused = f"postgresql+psycopg://hokusai:{PASSWORD}@127.0.0.1:{free_loopback_port()}/hokusai"
    for url, reason in ((missing, 'database "no_such_database" does not exist'), (refused, "Connection refused")):
        result = _refused_start(tmp_path, **{variable: url})

        assert result.returncode == 1
        assert result.stderr.startswith(f"Error: Cannot connect to the database of {variable}: "), result.stderr
        assert reason in result.stderr and PASSWORD not in result.stderr + result.stdout
        assert "Traceback" not in result.stderr and not (tmp_path / "data" / "mlflow" / "mlflow.log").exists()


def test_an_artifact_store_that_cannot_be_written_stops_the_start_in_one_line(tmp_path: Path, s3: S3Server) -> None:
    bucket = "hokusai-" + uuid.uuid4().hex[:8]
    s3.client().create_bucket(Bucket=bucket)
    no_credentials = {"AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_CONFIG_FILE": str(tmp_path / "none")}
    (tmp_path / "a-file").write_text("not a directory")
    cases = [
        ({"HOKUSAI_MLFLOW_ARTIFACTS_DESTINATION": "s3://no-such-bucket/mlflow", **s3.client_environment()},
         "Cannot write to bucket 'no-such-bucket' of HOKUSAI_MLFLOW_ARTIFACTS_DESTINATION: no such bucket."),
        ({"HOKUSAI_MLFLOW_ARTIFACTS_DESTINATION": f"s3://{bucket}/mlflow", **no_credentials},
         "Cannot use the artifact store of HOKUSAI_MLFLOW_ARTIFACTS_DESTINATION: Unable to locate credentials"),
        ({"HOKUSAI_MLFLOW_ARTIFACTS_DESTINATION": f"s3://{bucket}/mlflow", **s3.client_environment(),
          "HOKUSAI_MLFLOW_S3_ENDPOINT_URL": f"http://127.0.0.1:{free_loopback_port()}"},
         "Cannot reach the S3 endpoint (HOKUSAI_MLFLOW_S3_ENDPOINT_URL): Could not connect to the endpoint URL: "),
        ({"HOKUSAI_MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "a-file" / "artifacts")},
         f"Cannot write artifacts to {tmp_path / 'a-file' / 'artifacts'} (HOKUSAI_MLFLOW_ARTIFACTS_DESTINATION): "
         "Not a directory."),
    ]  # fmt: skip
    for env, message in cases:
        result = _refused_start(tmp_path, **{"HOKUSAI_MLFLOW_S3_ENDPOINT_URL": s3.endpoint_url, **env})

        assert result.returncode == 1
        assert result.stderr.startswith(f"Error: {message}") and result.stderr.count("\n") == 1, result.stderr
        assert s3.secret_access_key not in result.stderr + result.stdout
    # The check leaves nothing behind in a bucket it could write to.
    assert s3.client().list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_one_database_named_twice_under_two_spellings_stops_the_start(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    with fresh_database(postgres_server, f"shared_{uuid.uuid4().hex[:8]}") as url:
        result = _refused_start(
            tmp_path,
            HOKUSAI_DATABASE_URL=make_url(url).set(host="localhost").render_as_string(False),
            HOKUSAI_MLFLOW_DATABASE_URL=url,
        )

    assert result.returncode == 1
    assert result.stderr == (
        "Error: HOKUSAI_DATABASE_URL and HOKUSAI_MLFLOW_DATABASE_URL name the same database; each needs one of its "
        "own.\n"
    )


def _wait_for_status(client: httpx.Client, path: str, status: int, timeout: float = 60.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        response = client.post(path, json={"max_results": 1}) if path.endswith("search") else client.get(path)
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.5)


def test_a_database_outage_is_a_503_for_users_and_the_platform_recovers_by_itself(tmp_path: Path) -> None:
    """PostgreSQL (a cluster of this test's own) crashes under a running platform, then comes back."""
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed")
    with running_server(bindir) as cluster, contextlib.ExitStack() as stack:
        stores = {
            variable: stack.enter_context(fresh_database(cluster, name))
            for variable, name in (("HOKUSAI_DATABASE_URL", "hokusai"), ("HOKUSAI_MLFLOW_DATABASE_URL", "mlflow"),
                                   ("HOKUSAI_MLFLOW_AUTH_DATABASE_URL", "mlflow_auth"))
        }  # fmt: skip
        # Every request verifies its key in the database: no cached verification hides the outage.
        platform = start_platform(tmp_path / "data", HOKUSAI_KEY_CACHE_TTL_SECONDS="0", **stores)
        stack.callback(platform.stop)
        key = platform.create_key(platform.unique_owner("outage-"))
        with platform.client(key) as user, platform.client(platform.admin_key) as admin:
            assert user.post(API + "/experiments/search", json={"max_results": 1}).status_code == 200
            log_offset = platform.stderr_path.stat().st_size

            cluster.stop()
            answers = {
                "gateway": user.post(API + "/experiments/search", json={"max_results": 1}),
                "api": admin.get("/api/v1/keys"),
                "ready": user.get("/ready"),
            }
            log = platform.stderr_path.read_bytes()[log_offset:].decode(errors="replace")

            cluster.start()
            recovered = _wait_for_status(user, API + "/experiments/search", 200)
            ready = _wait_for_status(user, "/ready", 200)

            # Only MLflow's tracking store goes: /ready must not call that ready, nor blame credentials.
            _set_connections(cluster, "mlflow", allowed=False)
            tracking_down = _wait_for_status(user, "/ready", 503)
            mlflow_store_down = user.post(API + "/experiments/search", json={"max_results": 1})
            _set_connections(cluster, "mlflow", allowed=True)
            ready_again = _wait_for_status(user, "/ready", 200)

    for name, answer in answers.items():
        assert answer.status_code == 503, (name, answer.text)
        assert answer.headers["retry-after"], name
        body = answer.json()
        assert (body["error_code"], body["layer"]) == ("TEMPORARILY_UNAVAILABLE", "hokusai-api"), (name, body)
    assert answers["gateway"].json()["message"] == "The Hokusai database is unavailable right now; retry shortly."
    assert answers["api"].json() == answers["gateway"].json()
    assert answers["ready"].json()["message"] == "The Hokusai database (HOKUSAI_DATABASE_URL) is unavailable"
    assert "Traceback" not in log, log
    for request in (f"POST {API}/experiments/search", "GET /api/v1/keys"):  # one line each
        assert log.count(f"the Hokusai database is unavailable ({request})") == 1, log
    assert recovered.status_code == 200, recovered.text
    assert ready.status_code == 200, ready.text
    assert tracking_down.status_code == 503, tracking_down.text
    assert "its tracking store is unavailable" in tracking_down.json()["message"], tracking_down.text
    assert ready_again.status_code == 200, ready_again.text
    # MLflow's own 503 passes through, without the driver's text: its database's address is not the caller's business.
    assert mlflow_store_down.status_code == 503, mlflow_store_down.text
    assert mlflow_store_down.json()["layer"] == "mlflow"
    assert mlflow_store_down.json()["message"] == "MLflow's database is unavailable right now; retry shortly."
    assert str(cluster.port) not in mlflow_store_down.text


def _set_connections(cluster: PostgresServer, database: str, *, allowed: bool) -> None:
    """Open or close `database` to new connections; closing also ends those it has."""
    statements = [f"ALTER DATABASE {database} ALLOW_CONNECTIONS {str(allowed).lower()}"]
    if not allowed:
        statements.append(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'")
    engine = create_engine(cluster.url("postgres"), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            for statement in statements:
                connection.execute(text(statement))
    finally:
        engine.dispose()
