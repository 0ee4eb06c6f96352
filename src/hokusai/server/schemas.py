"""Request and response bodies of the Hokusai API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from hokusai.server.models import ApiKey


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="default", min_length=1, max_length=128)
    owner: str | None = Field(default=None, description="Admins only; defaults to the caller's own account")
    scopes: list[str] = Field(default_factory=lambda: ["read", "write"], min_length=1, max_length=3)
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class KeyInfo(BaseModel):
    id: str
    name: str
    owner: str
    scopes: list[str]
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def of(cls, record: ApiKey) -> KeyInfo:
        return cls(
            id=record.id,
            name=record.name,
            owner=record.owner,
            scopes=record.scopes.split(","),
            prefix=record.prefix,
            created_at=record.created_at,
            expires_at=record.expires_at,
            revoked_at=record.revoked_at,
            last_used_at=record.last_used_at,
        )


class KeyCreated(KeyInfo):
    key: str = Field(description="The full key. It is shown this once and cannot be recovered.")


class KeyList(BaseModel):
    keys: list[KeyInfo]


class WhoAmI(BaseModel):
    owner: str
    key_id: str
    key_prefix: str
    scopes: list[str]
    expires_at: datetime | None
    is_admin: bool
