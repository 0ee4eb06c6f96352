"""Reading the audit log back: filtered, newest first, paged by event id."""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import UTC, datetime

from sqlalchemy import select

from hokusai.errors import HokusaiValidationError
from hokusai.server.db import Database
from hokusai.server.mlflow_rest import page_token_not_issued
from hokusai.server.models import AuditEvent
from hokusai.server.schemas import AuditEventInfo, AuditEventList

_PAGE_TOKEN = re.compile(r"[1-9][0-9]{0,18}")
_MAX_EVENT_ID = 2**63 - 1


def as_utc(moment: datetime, field: str) -> datetime:
    """Naive datetimes are read as UTC; one that cannot be expressed in UTC is a 400, not a crash."""
    try:
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError as exc:
        raise HokusaiValidationError(field, "is out of range") from exc


def list_audit_events(
    database: Database,
    *,
    actor: str | None,
    action: str | None,
    since: datetime | None,
    until: datetime | None,
    page_token: str | None,
    max_results: int,
) -> AuditEventList:
    """Newest first; the page token is the id below which the next page starts."""
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(max_results + 1)
    if actor is not None:
        query = query.where(AuditEvent.actor == actor)
    if action is not None:
        query = query.where(AuditEvent.action == action)
    since = as_utc(since, "since") if since is not None else None
    until = as_utc(until, "until") if until is not None else None
    if since is not None and until is not None and since >= until:
        # An empty list would read as "nothing happened then", not as the swapped bounds it is.
        raise HokusaiValidationError("until", f"must be after since ({since.isoformat()}); nothing is in between")
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    if until is not None:
        query = query.where(AuditEvent.at < until)
    if page_token is not None:
        query = query.where(AuditEvent.id < _decode_page_token(page_token))
    with database.session() as session:
        rows = list(session.scalars(query))
    page, more = rows[:max_results], len(rows) > max_results
    return AuditEventList(
        events=[_event_info(row) for row in page],
        next_page_token=_encode_page_token(page[-1].id) if more else None,
    )


def _encode_page_token(event_id: int) -> str:
    return base64.urlsafe_b64encode(str(event_id).encode()).decode()


def _decode_page_token(page_token: str) -> int:
    try:
        text = base64.urlsafe_b64decode(page_token.encode("ascii")).decode("ascii")
    except (ValueError, binascii.Error, UnicodeError) as exc:
        raise page_token_not_issued() from exc
    # Both drivers bind the id as a 64-bit integer (the column itself is 32-bit on PostgreSQL, 64-bit on SQLite), so
    # a larger one failed in the query with a 500.
    if _PAGE_TOKEN.fullmatch(text) is None or int(text) > _MAX_EVENT_ID:
        raise page_token_not_issued()
    return int(text)


def _event_info(event: AuditEvent) -> AuditEventInfo:
    detail = None
    if event.detail:
        try:
            parsed = json.loads(event.detail)
        except ValueError:
            parsed = {"raw": event.detail}
        detail = parsed if isinstance(parsed, dict) else {"value": parsed}
    return AuditEventInfo(
        id=event.id,
        at=event.at,
        actor=event.actor,
        key_id=event.key_id,
        action=event.action,
        target=event.target,
        outcome=event.outcome,
        detail=detail,
        request_id=event.request_id,
    )
