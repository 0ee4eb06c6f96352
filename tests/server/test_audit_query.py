"""Reading the audit log back on SQLite and PostgreSQL: filters, time bounds and paging."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from hokusai.errors import HokusaiValidationError
from hokusai.server.audit import AuditLog
from hokusai.server.audit_query import list_audit_events
from hokusai.server.db import Database
from hokusai.server.models import AuditEvent
from hokusai.validation import AUDIT_ACTIONS, validate_audit_action


def _query(database: Database, **filters: object) -> list[AuditEvent]:
    arguments: dict[str, object] = dict(actor=None, action=None, since=None, until=None, page_token=None)
    arguments.update(filters)
    arguments.setdefault("max_results", 100)
    return list_audit_events(database, **arguments).events  # type: ignore[arg-type, return-value]


def test_filters_and_pages_newest_first(database: Database) -> None:
    audit = AuditLog(database)
    for index in range(5):
        audit.record(actor="alice", action="token.claim", outcome="ok", target=f"T{index}", detail={"n": index})
    audit.record(actor="bob", action="token.release", outcome="ok", target="T0")

    assert [event.target for event in _query(database, actor="alice")] == ["T4", "T3", "T2", "T1", "T0"]
    assert [event.actor for event in _query(database, action="token.release")] == ["bob"]
    assert _query(database, actor="alice")[0].detail == {"n": 4}

    seen, page_token = [], None
    while True:
        page = list_audit_events(
            database, actor="alice", action=None, since=None, until=None, page_token=page_token, max_results=2
        )
        assert len(page.events) <= 2
        seen += [event.target for event in page.events]
        page_token = page.next_page_token
        if page_token is None:
            break
    assert seen == ["T4", "T3", "T2", "T1", "T0"]


def test_time_bounds_accept_naive_utc_and_reject_unrepresentable(database: Database) -> None:
    AuditLog(database).record(actor="alice", action="key.create", outcome="ok")
    now = datetime.now(UTC)

    assert len(_query(database, since=now - timedelta(minutes=1))) == 1
    assert len(_query(database, since=(now + timedelta(minutes=1)).replace(tzinfo=None))) == 0
    assert len(_query(database, until=now - timedelta(minutes=1))) == 0
    before_year_one_in_utc = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))
    with pytest.raises(HokusaiValidationError, match="since"):
        _query(database, since=before_year_one_in_utc)
    # Swapped bounds say so, rather than answer "no events" (bad-input probe); offsets compare as instants.
    with pytest.raises(HokusaiValidationError, match="must be after since") as swapped:
        _query(database, since=now, until=(now - timedelta(hours=1)).astimezone(timezone(timedelta(hours=5))))
    assert swapped.value.field == "until"


# The last two: 2**63 and nineteen nines, past a 64-bit event id (a 500 from the database before).
@pytest.mark.parametrize(
    "page_token",
    ["not base64!", "MA==", "LTE=", "eHl6", "OTIyMzM3MjAzNjg1NDc3NTgwOA==", "OTk5OTk5OTk5OTk5OTk5OTk5OQ=="],
)
def test_foreign_page_tokens_are_refused(database: Database, page_token: str) -> None:
    with pytest.raises(HokusaiValidationError, match="page_token"):
        _query(database, page_token=page_token)


def test_only_listed_actions_are_recorded_or_filtered(database: Database) -> None:
    with pytest.raises(ValueError, match=r"not in hokusai\.validation\.AUDIT_ACTIONS"):
        AuditLog(database).record(actor="alice", action="token.claimed", outcome="ok")
    with pytest.raises(HokusaiValidationError, match=r"must be one of key\.create, key\.revoke") as caught:
        validate_audit_action("token.claimed")
    assert caught.value.field == "action"
    assert all(validate_audit_action(action) == action for action in AUDIT_ACTIONS)
