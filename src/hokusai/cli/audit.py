"""Contains ``hokusai audit``: the admins' view of the audit log, newest first."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from hokusai.cli._api import ApiUrlOption, call_api
from hokusai.cli._output import console

__all__ = ["register"]

AUDIT_PATH = "/api/v1/audit"
_MAX_PAGE = 1000  # the API's largest page
_REQUEST_ID_WIDTH = 120  # terminal columns from which the request id is shown as well


def register(app: typer.Typer) -> None:
    """Add the ``audit`` command to the root app."""
    app.command("audit")(audit)


def audit(
    actor: Annotated[str | None, typer.Option(help="Only this account's events.")] = None,
    action: Annotated[str | None, typer.Option(help="Only this action, e.g. token.claim or key.create.")] = None,
    since: Annotated[datetime | None, typer.Option(help="From this time on (UTC unless it says otherwise).")] = None,
    until: Annotated[datetime | None, typer.Option(help="Before this time.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many events.")] = 50,
    api_url: ApiUrlOption = None,
) -> None:
    """Admins: list audit events (claims, registrations, transfers, releases, key changes, refusals), newest first.

    Example: `hokusai audit --actor bob --action token.claim --since 2026-11-01`.
    """
    params: dict[str, Any] = {"actor": actor, "action": action}
    params.update({name: value.isoformat() for name, value in (("since", since), ("until", until)) if value})
    events = _fetch(params, limit, api_url)
    if not events:
        console().print("No audit events match.")
        return
    out = console()
    # Folded, never cut: an id or a target is only useful whole. The request id joins when the terminal is wide.
    columns = ["at", "actor", "action", "target", "outcome"] + (
        ["request id"] if out.width >= _REQUEST_ID_WIDTH else []
    )
    table = Table()
    for column in columns:
        table.add_column(column, overflow="fold", no_wrap=column == "at")
    for event in events:
        cells = [event["at"][:19], event["actor"], event["action"], event["target"] or "-", event["outcome"]]
        table.add_row(*cells, event["request_id"] or "-")
    out.print(table)


def _fetch(params: dict[str, Any], limit: int, api_url: str | None) -> list[dict[str, Any]]:
    """Up to `limit` events, following the API's pages."""
    events: list[dict[str, Any]] = []
    page_token = None
    while len(events) < limit:
        query = {**params, "max_results": min(limit - len(events), _MAX_PAGE), "page_token": page_token}
        page = call_api("GET", AUDIT_PATH, api_url, params={k: v for k, v in query.items() if v is not None})
        events.extend(page["events"])
        page_token = page.get("next_page_token")
        if not page_token:
            break
    return events
