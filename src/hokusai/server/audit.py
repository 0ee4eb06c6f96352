"""The append-only audit log (claims, registrations, transfers, key changes, permission denials), and the caller."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from hokusai.server.db import Database
from hokusai.server.keys import Principal
from hokusai.server.models import AuditEvent, utcnow
from hokusai.validation import AUDIT_ACTIONS

logger = logging.getLogger(__name__)


class AuditLog:
    def __init__(self, database: Database) -> None:
        self._database = database

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(database={self._database!r})"

    def record(
        self,
        *,
        actor: str,
        action: str,
        outcome: str,
        key_id: str | None = None,
        target: str | None = None,
        detail: Mapping[str, Any] | None = None,
        request_id: str | None = None,
    ) -> None:
        """Append one event (blocking). Never pass key material in `detail`."""
        if action not in AUDIT_ACTIONS:
            # Filters accept only the listed actions: an unlisted one could be recorded but never found.
            raise ValueError(f"audit action {action!r} is not in hokusai.validation.AUDIT_ACTIONS")
        event = AuditEvent(
            at=utcnow(),
            actor=actor,
            key_id=key_id,
            action=action,
            target=target[:512] if target else None,
            outcome=outcome,
            detail=json.dumps(dict(detail), sort_keys=True, default=str) if detail else None,
            request_id=request_id,
        )
        try:
            with self._database.session() as session:
                session.add(event)
        except SQLAlchemyError:
            # An audit write failing must not turn the user's request into a 500; it is logged loudly instead.
            logger.exception("could not write audit event %s/%s", action, outcome)


@dataclass(frozen=True)
class Caller:
    """Who is asking, for MLflow (identity) and for the audit log."""

    principal: Principal
    request_id: str | None

    @classmethod
    def of(cls, request: Request, principal: Principal) -> Caller:
        return cls(principal=principal, request_id=getattr(request.state, "request_id", None))


async def audit_event(
    audit: AuditLog, caller: Caller, action: str, outcome: str, target: str, detail: Mapping[str, Any] | None = None
) -> None:
    await run_in_threadpool(
        audit.record,
        actor=caller.principal.owner,
        key_id=caller.principal.key_id,
        action=action,
        outcome=outcome,
        target=target,
        detail=detail,
        request_id=caller.request_id,
    )
