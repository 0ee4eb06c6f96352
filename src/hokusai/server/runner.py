"""`hokusai server`: start the embedded MLflow (unless an external one is configured), then the API."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import shlex
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from typing import TextIO
from urllib.parse import SplitResult, urlsplit

import uvicorn
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from hokusai._private_files import write_private_file
from hokusai.server.db import Database
from hokusai.server.errors import database_error_reason
from hokusai.server.gateway import MLFLOW_MOUNT
from hokusai.server.keys import KeyStore
from hokusai.server.main import create_app
from hokusai.server.mlflow_process import EmbeddedMlflow
from hokusai.server.request_head import request_head_protocol
from hokusai.server.secrets import PlatformSecrets, load_or_create_secrets
from hokusai.server.settings import Settings, unknown_variables
from hokusai.validation import SCOPES

logger = logging.getLogger("hokusai.server")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
PRIVATE_FILES_UMASK = 0o077
FIRST_ADMIN_KEY_FILE = "first-admin-key"
_LOCK_FILE = "server.lock"


class _StopRequested(Exception):
    """Ctrl-C or SIGTERM arrived."""


def _request_stop(_signum: int, _frame: object) -> None:
    raise _StopRequested


def _install_stop_handlers() -> None:
    # uvicorn shuts down gracefully, restores these handlers and re-raises the signal: with the default SIGTERM
    # action the process would die right there and orphan the MLflow child. This handler unwinds instead.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _request_stop)


class StartRefusedError(RuntimeError):
    """The server cannot start as configured (a taken port, an address not this machine's, a data dir another server
    holds); the message names what to change."""


_MSEC_FORMAT = "%s,%03d"  # logging.Formatter's default_msec_format


class _ServerFormatter(logging.Formatter):
    """LOG_FORMAT's formatter, with the date and time put into words once a second rather than once a line: the
    access log writes a line per request."""

    def __init__(self) -> None:
        super().__init__(LOG_FORMAT)
        self._second = -1
        self._second_text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:  # a handler formats under its lock: one thread at a time here
            self._second_text = time.strftime(self.default_time_format, self.converter(second))
            self._second = second
        return _MSEC_FORMAT % (self._second_text, record.msecs)


def _cancellation_in_one_line(record: logging.LogRecord) -> bool:
    """uvicorn logs a request it cancels (one still running when the shutdown's grace period ends, after its own line
    saying so) as an "Exception in ASGI application" with a traceback of the whole stack: one line says it all."""
    if record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError):
        record.msg, record.args = "A running request was cancelled: %s", (record.exc_info[1],)
        record.exc_info = record.exc_text = None
    return True


def configure_logging(level: str, stream: TextIO | None = None) -> None:
    """The server's logging, to `stream` (standard error by default).

    Process-wide, callers' file names and line numbers are not looked up: a format showing `%(lineno)d` or
    `%(funcName)s` would print placeholders.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_ServerFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler])
    logging.getLogger("uvicorn.error").addFilter(_cancellation_in_one_line)
    # Every proxied request writes an access line. LOG_FORMAT shows neither where a call came from nor its thread or
    # process, so none is looked up (the logging HOWTO's "Optimization" switches): the caller's frame cost 3-4% of
    # the gateway's CPU per request, and the process id is a system call on each line.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # httpx logs every control-plane call at INFO with its full URL: MLflow's internal address, and search filters
    # that carry model names and run ids, which the access log leaves out on purpose. botocore says at INFO where it
    # found the S3 credentials, on each client it builds. Their warnings still show.
    for chatty in ("httpx", "botocore"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLogger().level))


def ensure_port_free(host: str, port: int, setting: str = "--port (or HOKUSAI_PORT)") -> None:
    """Refuse a port that is taken, or an address that is not this machine's, before anything is started.

    For the embedded MLflow's port this matters beyond a clear message: a server already listening there would
    answer the readiness check, and the gateway would send it the signed identity assertions.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except socket.gaierror as exc:
            raise StartRefusedError(f"Cannot listen on {host!r} (HOKUSAI_HOST): {exc.strerror}.") from None
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StartRefusedError(
                    f"Port {port} on {host} is already in use; choose another with {setting}."
                ) from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise StartRefusedError(f"{host} is not an address of this machine (HOKUSAI_HOST).") from None
            raise


_STORE_CONNECT_TIMEOUT_SECONDS = 10


def ensure_databases_reachable(settings: Settings) -> None:
    """Connect once to each database server the platform is set to use, before anything starts.

    Otherwise an unreachable PostgreSQL showed as a traceback from the API, or, for the embedded MLflow's stores,
    as MLflow retrying for the whole start-up timeout. SQLite files are created where they are missing, as usual.
    Two settings that name one database under two spellings (`localhost` and `127.0.0.1`) are caught here, where
    the settings' own check, which compares the URLs, cannot tell.
    """
    databases = {"HOKUSAI_DATABASE_URL": settings.resolved_database_url}
    if settings.embedded_mlflow:
        databases["HOKUSAI_MLFLOW_DATABASE_URL"] = settings.resolved_mlflow_database_url.get_secret_value()
        databases["HOKUSAI_MLFLOW_AUTH_DATABASE_URL"] = settings.resolved_mlflow_auth_database_url.get_secret_value()
    seen: dict[tuple[object, ...], str] = {}
    for variable, url in databases.items():
        if make_url(url).get_backend_name() != "sqlite":
            identity = _postgres_database_identity(variable, url)
            if identity in seen:
                raise StartRefusedError(
                    f"{seen[identity]} and {variable} name the same database; each needs one of its own."
                )
            seen[identity] = variable


def _postgres_database_identity(variable: str, url: str) -> tuple[object, ...]:
    """What tells this database from any other: its server's start time and port, and its name."""
    engine = create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": _STORE_CONNECT_TIMEOUT_SECONDS})
    try:
        with engine.connect() as connection:
            row = connection.execute(
                text("SELECT pg_postmaster_start_time(), current_setting('port'), current_database()")
            ).one()
    except SQLAlchemyError as exc:
        raise StartRefusedError(f"Cannot connect to the database of {variable}: {database_error_reason(exc)}") from None
    finally:
        engine.dispose()
    return tuple(row)


def ensure_artifact_store_usable(settings: Settings) -> None:
    """Write and delete one object in the artifact store, before anything starts.

    MLflow would start without a word and answer each user's first upload with a bare 500 (a missing bucket, wrong
    or read-only credentials, a wrong endpoint, a directory it cannot write): an operator's mistake, told to users.
    """
    if not settings.embedded_mlflow or settings.mlflow_artifacts_destination is None:
        return  # the default lives in the data dir, which has checks of its own
    destination = settings.resolved_mlflow_artifacts_destination
    parts = urlsplit(destination)
    if parts.scheme == "s3":
        _check_s3_destination(settings, parts)
    else:
        _check_local_destination(Path(destination))


_PROBE_NAME = ".hokusai-start-check"


def _check_local_destination(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / _PROBE_NAME
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise StartRefusedError(
            f"Cannot write artifacts to {directory} (HOKUSAI_MLFLOW_ARTIFACTS_DESTINATION): {exc.strerror}."
        ) from None


def _check_s3_destination(settings: Settings, destination: SplitResult) -> None:
    import boto3  # only S3 deployments pay for importing it
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

    config = Config(connect_timeout=_STORE_CONNECT_TIMEOUT_SECONDS, retries={"max_attempts": 1})
    client = boto3.client("s3", endpoint_url=settings.mlflow_s3_endpoint_url, config=config)
    bucket, key = destination.netloc, f"{destination.path.strip('/')}/{_PROBE_NAME}".lstrip("/")
    try:
        client.put_object(Bucket=bucket, Key=key, Body=b"")
        client.delete_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code"))
        reason = {
            "NoSuchBucket": "no such bucket",
            "AccessDenied": "access denied: the AWS_* credentials must allow writing and deleting objects there",
            "InvalidAccessKeyId": "the access key is unknown (AWS_ACCESS_KEY_ID)",
            "SignatureDoesNotMatch": "the secret key does not match the access key (AWS_SECRET_ACCESS_KEY)",
        }.get(code, str(exc.response.get("Error", {}).get("Message") or code))
        raise StartRefusedError(
            f"Cannot write to bucket {bucket!r} of HOKUSAI_MLFLOW_ARTIFACTS_DESTINATION: {reason}."
        ) from None
    except EndpointConnectionError as exc:
        setting = "HOKUSAI_MLFLOW_S3_ENDPOINT_URL" if settings.mlflow_s3_endpoint_url else "the AWS region (AWS_*)"
        raise StartRefusedError(f"Cannot reach the S3 endpoint ({setting}): {exc}") from None
    except BotoCoreError as exc:
        raise StartRefusedError(
            f"Cannot use the artifact store of HOKUSAI_MLFLOW_ARTIFACTS_DESTINATION: {exc}"
        ) from None


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def bootstrap_admin_key(settings: Settings, platform_secrets: PlatformSecrets) -> str | None:
    """On a fresh data dir, create the first admin key; returns it so it can be shown once."""
    database = Database(settings.resolved_database_url)
    try:
        store = KeyStore(database, platform_secrets.key_pepper, cache_ttl=settings.key_cache_ttl_seconds)
        if store.count():
            return None
        issued = store.create(owner=settings.admin_owner, name="bootstrap admin", scopes=frozenset(SCOPES))
        return issued.secret
    finally:
        database.close()


def _hokusai_command() -> str:
    """How to call this installation's `hokusai` from here: `make run` does not put its virtualenv on PATH."""
    installed = Path(sys.executable).parent / "hokusai"
    found = shutil.which("hokusai")
    if not installed.exists() or (found is not None and Path(found).resolve() == installed.resolve()):
        return "hokusai"
    return os.path.relpath(installed) if installed.is_relative_to(Path.cwd()) else str(installed)


def first_start_banner(settings: Settings, key: str | Path) -> str:
    """The first-start message, with the admin key itself or with the private file that holds it."""
    # The admin key is not offered for MLflow work: as an MLflow admin, its bare runs would land in the shared
    # experiment 0 and MLflow's permissions would not apply to it.
    api = settings.resolved_public_url
    if isinstance(key, Path):
        where = [
            f"Hokusai is set up. Its admin key is in {key} (readable by you alone), not in this output,",
            "which may be kept as a log. Store the key, then delete that file:",
        ]
        value = f"$(cat {shlex.quote(str(key))})"
    else:
        where = ["Hokusai is set up. This admin key is shown once; store it now:"]
        value = key
    return "\n".join(
        [
            "",
            *where,
            "",
            f"  export HOKUSAI_API_KEY={value}",
            f"  export HOKUSAI_API_URL={api}",
            "",
            f"Create keys for your users with: {_hokusai_command()} keys create --owner NAME --scopes read,write",
            "Use one of those for your own work, not the admin key (it acts as MLflow's admin), in a shell where",
            "HOKUSAI_API_KEY is not set (it would take precedence over the saved login):",
            "",
            f"  {_hokusai_command()} login --api-url {api}",
            f"  export MLFLOW_TRACKING_URI={api}{MLFLOW_MOUNT}",
            "  export MLFLOW_TRACKING_TOKEN=<a user's key>",
            "",
        ]
    )


def announce_first_admin_key(settings: Settings, key: str, out: TextIO) -> None:
    """Show the first admin key on a terminal; anywhere else (a file, a pipe, a service's journal) output may be
    kept as a log, so the key goes to a private file in the data dir and the output names that file.

    An earlier platform's key file is never replaced: a new key database (a changed HOKUSAI_DATABASE_URL) beside an
    old data dir would otherwise overwrite the only copy of that platform's admin key.
    """
    if out.isatty():
        print(first_start_banner(settings, key), file=out, flush=True)
        return
    key_file = _unused_path(settings.resolved_data_dir / FIRST_ADMIN_KEY_FILE)
    write_private_file(key_file, key + "\n")
    print(first_start_banner(settings, key_file), file=out, flush=True)


def _unused_path(path: Path) -> Path:
    number = 1
    while path.exists():
        number += 1
        path = path.with_name(f"{FIRST_ADMIN_KEY_FILE}-{number}")
    return path


def hold_data_dir(settings: Settings) -> int | None:
    """Lock the data dir for this server's life; a second server on it is refused (an open file descriptor).

    Two servers on one data dir would run two MLflows on one SQLite store and keep the per-token locks apart (they
    are in-process on SQLite). The kernel drops the lock when the process ends, however it ends: no stale lock. Only
    PostgreSQL with an external MLflow keeps nothing in the data dir that two servers could not share.
    """
    if not settings.embedded_mlflow and settings.database_url is not None:
        return None
    lock_path = settings.resolved_data_dir / _LOCK_FILE
    descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(descriptor, 32).decode(errors="replace").strip() or "another process"
        os.close(descriptor)
        raise StartRefusedError(
            f"Another Hokusai server (pid {holder}) is running on the data directory {settings.resolved_data_dir}; "
            "stop it, or give this one its own HOKUSAI_DATA_DIR."
        ) from None
    os.ftruncate(descriptor, 0)
    os.write(descriptor, str(os.getpid()).encode())
    return descriptor


def warn_if_first_admin_key_left(settings: Settings) -> None:
    """Each start reminds the operator while the first admin key still sits in its file."""
    key_file = settings.resolved_data_dir / FIRST_ADMIN_KEY_FILE
    if key_file.exists():
        logger.warning("%s still holds the first admin key: store the key elsewhere, then delete the file", key_file)


def serve(settings: Settings) -> None:
    # Everything the platform writes (its databases, MLflow's, the log, artifacts) is for the server's user alone,
    # like its secrets; the MLflow child inherits this.
    os.umask(PRIVATE_FILES_UMASK)
    configure_logging(settings.log_level)
    unknown = unknown_variables(os.environ)
    if unknown:
        logger.warning("ignored, not Hokusai settings (a typo? see .env.example): %s", ", ".join(unknown))
    ensure_port_free(settings.host, settings.port)
    if settings.embedded_mlflow and settings.mlflow_port:
        ensure_port_free("127.0.0.1", settings.mlflow_port, "HOKUSAI_MLFLOW_PORT (0 picks a free one)")
    ensure_databases_reachable(settings)
    ensure_artifact_store_usable(settings)
    _install_stop_handlers()
    platform_secrets = load_or_create_secrets(settings)
    held = hold_data_dir(settings)
    mlflow = None
    try:
        if settings.embedded_mlflow:
            mlflow = EmbeddedMlflow(settings, platform_secrets, settings.mlflow_port or free_loopback_port())
            mlflow.start()  # inside the try: Ctrl-C while MLflow starts, or a failed start, still stops the child
            mlflow_url = mlflow.url
        else:
            assert settings.mlflow_url is not None
            mlflow_url = settings.mlflow_url
        app = create_app(settings, platform_secrets, mlflow_url)
        first_key = bootstrap_admin_key(settings, platform_secrets)
        if first_key is not None:
            announce_first_admin_key(settings, first_key, sys.stdout)
        else:
            warn_if_first_admin_key_left(settings)
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            access_log=False,
            log_config=None,
            log_level=settings.log_level,
            timeout_keep_alive=75,
            server_header=False,
            # uvicorn calls what it is given per connection; its annotation asks for a class.
            http=request_head_protocol(settings.client_header_timeout_seconds),  # type: ignore[arg-type]
            timeout_graceful_shutdown=settings.shutdown_timeout_seconds,
        )
        logger.info(
            "Hokusai API starting on http://%s:%s (MLflow clients: %s)", settings.host, settings.port, MLFLOW_MOUNT
        )
        uvicorn.Server(config).run()
    except _StopRequested:
        pass
    finally:
        if mlflow is not None:
            mlflow.stop()
        if held is not None:
            os.close(held)
        logger.info("Hokusai stopped")
