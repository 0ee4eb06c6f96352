"""The one typed settings object of the Hokusai API server, read from the environment and an optional `.env`."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MlflowPermission = Literal["READ", "USE", "EDIT", "MANAGE", "NO_PERMISSIONS"]
IdentityMode = Literal["assertion", "service-account", "none"]


class Settings(BaseSettings):
    """Every setting the server reads. `.env.example` documents each one; a test keeps the two in step."""

    model_config = SettingsConfigDict(
        env_prefix="HOKUSAI_", env_file=".env", env_ignore_empty=True, extra="ignore", frozen=True
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    public_url: str | None = None
    data_dir: Path = Path(".hokusai")
    database_url: str | None = None
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
    assertion_secret: SecretStr | None = None
    assertion_ttl_seconds: int = Field(default=60, ge=5, le=3600)

    client_header_timeout_seconds: float = Field(default=60.0, gt=0)
    client_body_timeout_seconds: float = Field(default=60.0, gt=0)
    client_send_timeout_seconds: float = Field(default=60.0, gt=0)

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
        return value

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
        return self.database_url or f"sqlite:///{self.resolved_data_dir / 'hokusai.db'}"

    @property
    def resolved_public_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

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
