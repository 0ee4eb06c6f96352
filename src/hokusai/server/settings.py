"""The one typed settings object of the Hokusai API server, read from the environment and an optional `.env`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from dotenv import dotenv_values
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from hokusai.errors import HokusaiConfigurationError, HokusaiValidationError
from hokusai.validation import validate_owner

# A host name or an fnmatch pattern of one (`*.example.com`, or `*` alone for any host), as a Host header names it.
_HOST_PATTERN = re.compile(r"[a-z0-9*?._-]+")
MlflowPermission = Literal["READ", "USE", "EDIT", "MANAGE", "NO_PERMISSIONS"]
IdentityMode = Literal["assertion", "service-account", "none"]


class Settings(BaseSettings):
    """Every setting the server reads. `.env.example` documents each one; a test keeps the two in step."""

    # allow_inf_nan=False: an infinite cache TTL or timeout reads as a number and would never expire.
    model_config = SettingsConfigDict(
        env_prefix="HOKUSAI_", env_file=".env", env_ignore_empty=True, extra="ignore", frozen=True, allow_inf_nan=False
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)  # not 0: the banner and the browser origins name the port
    public_url: str | None = None
    # Comma-separated, not JSON like pydantic-settings' other lists: MLflow's --allowed-hosts is written the same way.
    allowed_hosts: Annotated[tuple[str, ...] | None, NoDecode] = None
    data_dir: Path = Path(".hokusai")
    database_url: SecretStr | None = None  # a PostgreSQL URL may carry a password
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    key_pepper: SecretStr | None = None
    key_cache_ttl_seconds: float = Field(default=10.0, ge=0)
    last_used_flush_seconds: float = Field(default=30.0, gt=0)
    admin_owner: str = "admin"

    mlflow_url: str | None = None
    mlflow_username: str | None = None
    mlflow_password: SecretStr | None = None
    mlflow_port: int = Field(default=0, ge=0, le=65535)
    mlflow_workers: int = Field(default=2, ge=1, le=16)
    mlflow_default_permission: MlflowPermission = "READ"
    mlflow_admin_password: SecretStr | None = None
    mlflow_startup_timeout_seconds: float = Field(default=120.0, gt=0)
    # Where the embedded MLflow keeps its data; a bigger deployment puts them on PostgreSQL and S3-compatible storage.
    mlflow_database_url: SecretStr | None = None
    mlflow_auth_database_url: SecretStr | None = None
    mlflow_artifacts_destination: str | None = None
    mlflow_s3_endpoint_url: str | None = None
    assertion_secret: SecretStr | None = None
    assertion_ttl_seconds: int = Field(default=60, ge=5, le=3600)

    client_header_timeout_seconds: float = Field(default=60.0, gt=0)
    client_body_timeout_seconds: float = Field(default=60.0, gt=0)
    client_send_timeout_seconds: float = Field(default=60.0, gt=0)
    shutdown_timeout_seconds: int = Field(default=30, gt=0)  # whole seconds, as uvicorn takes them

    upstream_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    upstream_read_timeout_seconds: float = Field(default=600.0, gt=0)
    upstream_write_timeout_seconds: float = Field(default=600.0, gt=0)
    upstream_call_timeout_seconds: float = Field(default=20.0, gt=0)
    upstream_max_connections: int = Field(default=100, ge=1)
    upstream_max_connections_per_user: int = Field(default=32, ge=1)
    upstream_keepalive_seconds: float = Field(default=4.0, ge=0)

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_case(cls, value: object) -> object:
        # LOG_LEVEL=INFO is how most tools spell it.
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("assertion_secret", mode="before")
    @classmethod
    def _without_surrounding_whitespace(cls, value: object) -> object:
        # A secret pasted into `.env` or mounted from a file often ends in a newline. The MLflow side reads the secret
        # file stripped, so an unstripped one here would fail every signature check.
        return value.strip() if isinstance(value, str) else value

    @field_validator("mlflow_admin_password", mode="before")
    @classmethod
    def _on_one_line(cls, value: object) -> object:
        if isinstance(value, str) and ("\n" in value or "\r" in value):
            raise ValueError("must be on one line (it is written to MLflow's auth config file)")
        if isinstance(value, str) and len(value) < 12:
            raise ValueError("must be at least 12 characters (MLflow refuses to start with a shorter one)")
        return value

    @field_validator("assertion_secret", "key_pepper", mode="after")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        # HS256 wants a key of at least 32 bytes; the generated secrets have 43 characters.
        if value is not None and len(value.get_secret_value().encode()) < 32:
            raise ValueError("must be at least 32 bytes long (leave it unset to have one generated)")
        return value

    @field_validator("mlflow_url", "public_url", "mlflow_s3_endpoint_url", mode="after")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host, e.g. http://mlflow.internal:5000")
        return value

    @field_validator("database_url", "mlflow_database_url", "mlflow_auth_database_url", mode="after")
    @classmethod
    def _sqlalchemy_url(cls, value: str | SecretStr | None) -> str | SecretStr | None:
        if value is not None:
            _check_database_url(value.get_secret_value() if isinstance(value, SecretStr) else value)
        return value

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _host_names(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        names = tuple(name.strip().lower().rstrip(".") for name in value.split(",") if name.strip())
        for name in names:
            if not _HOST_PATTERN.fullmatch(name):
                raise ValueError(
                    f"{name!r} is not a host name: give names alone, without a scheme, port or path (e.g. "
                    "api.example.com or *.example.com; * alone turns the check off)"
                )
        return names or None

    @field_validator("mlflow_artifacts_destination", mode="after")
    @classmethod
    def _artifact_store(cls, value: str | None) -> str | None:
        if value is not None:
            _check_artifacts_destination(value)
        return value

    @field_validator("admin_owner", mode="after")
    @classmethod
    def _valid_owner(cls, value: str) -> str:
        try:
            return validate_owner(value)
        except HokusaiValidationError as exc:
            raise ValueError(f"{exc.problem} (the rule `hokusai keys create --owner` applies)") from exc

    @field_validator("mlflow_default_permission", mode="before")
    @classmethod
    def _upper_case(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_external_credentials(self) -> Settings:
        if (self.mlflow_username is None) != (self.mlflow_password is None):
            raise ValueError("HOKUSAI_MLFLOW_USERNAME and HOKUSAI_MLFLOW_PASSWORD must be set together")
        if self.mlflow_url is None and self.mlflow_username is not None:
            raise ValueError("HOKUSAI_MLFLOW_USERNAME/PASSWORD only apply with HOKUSAI_MLFLOW_URL (an external MLflow)")
        return self

    @model_validator(mode="after")
    def _check_embedded_stores(self) -> Settings:
        stores = {
            "HOKUSAI_MLFLOW_DATABASE_URL": self.mlflow_database_url,
            "HOKUSAI_MLFLOW_AUTH_DATABASE_URL": self.mlflow_auth_database_url,
            "HOKUSAI_MLFLOW_ARTIFACTS_DESTINATION": self.mlflow_artifacts_destination,
            "HOKUSAI_MLFLOW_S3_ENDPOINT_URL": self.mlflow_s3_endpoint_url,
        }
        named = [name for name, value in stores.items() if value is not None]
        if named and not self.embedded_mlflow:
            raise ValueError(
                f"{', '.join(named)} only apply to the embedded MLflow; an external one (HOKUSAI_MLFLOW_URL) keeps its "
                "data where its own operator put it"
            )
        databases = {
            "HOKUSAI_DATABASE_URL": self.resolved_database_url,
            "HOKUSAI_MLFLOW_DATABASE_URL": self.resolved_mlflow_database_url.get_secret_value(),
            "HOKUSAI_MLFLOW_AUTH_DATABASE_URL": self.resolved_mlflow_auth_database_url.get_secret_value(),
        }
        seen: dict[str, str] = {}
        for name, url in databases.items():
            database = _database_identity(url)
            if database in seen:
                raise ValueError(
                    f"{seen[database]} and {name} name the same database; each needs one of its own (their schema "
                    "versions are kept in tables of the same name)"
                )
            seen[database] = name
        return self

    @model_validator(mode="after")
    def _check_ports_and_shares(self) -> Settings:
        if self.embedded_mlflow and self.mlflow_port == self.port:
            raise ValueError("HOKUSAI_MLFLOW_PORT must differ from HOKUSAI_PORT (0 picks a free one)")
        if self.upstream_max_connections_per_user > self.upstream_max_connections:
            raise ValueError(
                "HOKUSAI_UPSTREAM_MAX_CONNECTIONS_PER_USER must be at most HOKUSAI_UPSTREAM_MAX_CONNECTIONS"
            )
        return self

    @property
    def embedded_mlflow(self) -> bool:
        return self.mlflow_url is None

    @property
    def identity_mode(self) -> IdentityMode:
        """How the gateway identifies itself upstream; docs/architecture.md explains each mode."""
        if self.embedded_mlflow:
            return "assertion"
        return "service-account" if self.mlflow_username else "none"

    @cached_property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def resolved_database_url(self) -> str:
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite:///{self.resolved_data_dir / 'hokusai.db'}"

    @property
    def mlflow_home(self) -> Path:
        """The embedded MLflow's directory in the data dir: its config, log and, by default, its data."""
        return self.resolved_data_dir / "mlflow"

    @property
    def resolved_mlflow_database_url(self) -> SecretStr:
        """The embedded MLflow's tracking and registry store (a secret: a PostgreSQL URL may carry a password)."""
        return self.mlflow_database_url or SecretStr(f"sqlite:///{self.mlflow_home / 'mlflow.db'}")

    @property
    def resolved_mlflow_auth_database_url(self) -> SecretStr:
        """The embedded MLflow's auth store: its users and their permissions."""
        return self.mlflow_auth_database_url or SecretStr(f"sqlite:///{self.mlflow_home / 'basic_auth.db'}")

    @property
    def resolved_mlflow_artifacts_destination(self) -> str:
        destination = self.mlflow_artifacts_destination
        if destination is None:
            return str(self.mlflow_home / "artifacts")
        if urlsplit(destination).scheme:
            return destination
        return str(Path(destination).expanduser().resolve())  # MLflow runs in its own directory

    @property
    def resolved_public_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @cached_property
    def trusted_hosts(self) -> tuple[str, ...]:
        """The host names a request's `Host` may carry besides IP addresses: `localhost`, the public URL's host and
        HOKUSAI_ALLOWED_HOSTS (fnmatch patterns, lower case; `*` lets any host in)."""
        public_host = urlsplit(self.resolved_public_url).hostname or ""
        return tuple(dict.fromkeys(("localhost", public_host, *(self.allowed_hosts or ()))))

    @cached_property
    def browser_origins(self) -> tuple[str, ...]:
        """The pages a browser may write to MLflow from: the API's own (MLflow's web UI through it), by the public URL
        or on this machine at the API's port.

        MLflow itself lets a page on any `localhost` port write, so a page any local program serves could use a
        browser's cached MLflow login (found by a security review, 2026-11-27); the gateway refuses those.
        """
        public = urlsplit(self.resolved_public_url)
        local = (f"http://127.0.0.1:{self.port}", f"http://localhost:{self.port}")
        return tuple(dict.fromkeys((f"{public.scheme}://{public.netloc}", *local)))


def _check_database_url(value: str) -> None:
    if "\n" in value or "\r" in value:
        raise ValueError("must be on one line")
    try:
        url = make_url(value)
    except ArgumentError as exc:
        raise ValueError("must be an SQLAlchemy URL, e.g. postgresql+psycopg://user@host:5432/hokusai") from exc
    try:
        url.get_dialect().import_dbapi()
    except (ImportError, ArgumentError) as exc:
        raise ValueError(
            f"no installed driver for {url.drivername}:// URLs; use sqlite:///PATH or postgresql+psycopg://…"
        ) from exc


def _database_identity(url: str) -> str:
    """What names one database, whatever the user, password or options: host, port and database (or file)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return f"sqlite:{Path(parsed.database or '').expanduser().resolve()}"
    host = parsed.host or parsed.query.get("host") or ""  # `?host=/run/postgresql`: a Unix socket's directory
    return f"{parsed.get_backend_name()}://{host}:{parsed.port or ''}/{parsed.database or ''}"


# Artifact stores MLflow can write to with what `mlflow[auth]` and this package install.
_ARTIFACT_SCHEMES = ("s3",)


def _check_artifacts_destination(value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme == "":
        return  # a local directory
    if parts.scheme in _ARTIFACT_SCHEMES and parts.netloc:
        return
    raise ValueError(
        "must be a local directory or an s3://BUCKET[/PREFIX] URI (any S3-compatible store: set "
        "HOKUSAI_MLFLOW_S3_ENDPOINT_URL for one that is not AWS)"
    )


def unknown_variables(environ: Mapping[str, str], env_file: Path = Path(".env")) -> list[str]:
    """`HOKUSAI_*` names in the environment or `.env` that nothing reads: most likely a typo (`HOKUSAI_PROT`), which
    the settings would otherwise ignore in silence."""
    from hokusai._credentials import API_KEY_ENV, API_URL_ENV
    from hokusai._flags import DEBUG, MOCK_MODE, OPTIONAL_MLFLOW
    from hokusai._paths import HOME_ENV

    known = {f"HOKUSAI_{name.upper()}" for name in Settings.model_fields}
    known |= {API_KEY_ENV, API_URL_ENV, DEBUG, MOCK_MODE, OPTIONAL_MLFLOW, HOME_ENV}  # the SDK's and the CLI's
    named = set(environ) | (set(dotenv_values(env_file)) if env_file.is_file() else set())
    return sorted(name for name in named if name.upper().startswith("HOKUSAI_") and name.upper() not in known)


def load_settings(**overrides: Any) -> Settings:
    """The settings, or a `HokusaiConfigurationError` naming each broken variable and never its value, which may be a
    secret (pydantic's own message quotes every input)."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(_problem(error) for error in exc.errors())
        raise HokusaiConfigurationError(problems) from None


def _problem(error: ErrorDetails) -> str:
    fields = [str(part) for part in error["loc"]]
    name = f"HOKUSAI_{'_'.join(fields).upper()}" if fields else "settings"
    return f"{name}: {error['msg'].removeprefix('Value error, ')}"
