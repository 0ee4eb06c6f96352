"""Contains ``hokusai audit``: the admins' view of the audit log, newest first."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.cells import cell_len
from rich.table import Table

from hokusai._printable import printable
from hokusai.cli._api import ApiUrlOption, call_api
from hokusai.cli._errors import options_for_fields
from hokusai.cli._output import JsonOption, console, print_json_lines
from hokusai.validation import MAX_PAGE_SIZE

__all__ = ["register"]

AUDIT_PATH = "/api/v1/audit"

Event = dict[str, Any]


def register(app: typer.Typer) -> None:
    """Add the ``audit`` command to the root app."""
    app.command("audit")(audit)


def _moment(value: str) -> datetime:
    try:
        return datetime.fromisoformat(value.strip())
    except ValueError:
        raise typer.BadParameter(
            "must be a date or a date and time, e.g. 2026-11-01 or 2026-11-01T09:30 (UTC unless it gives an offset, "
            "as in 2026-11-01T09:30+02:00)"
        ) from None


def audit(
    actor: Annotated[str | None, typer.Option(help="Only this account's events.")] = None,
    action: Annotated[str | None, typer.Option(help="Only this action, e.g. token.claim or key.create.")] = None,
    since: Annotated[
        datetime | None, typer.Option(parser=_moment, help="From this time on (UTC unless it says otherwise).")
    ] = None,
    until: Annotated[datetime | None, typer.Option(parser=_moment, help="Before this time.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many events.")] = 50,
    as_json: JsonOption = False,
    api_url: ApiUrlOption = None,
) -> None:
    """Admins: list audit events (claims, registrations, transfers, releases, key changes, refusals), newest first.

    Example: `hokusai audit --actor bob --action token.claim --since 2026-11-01`; for scripts, `hokusai audit
    --action token.transfer --json | jq -r .detail.to`.
    """
    params: dict[str, Any] = {"actor": actor, "action": action}
    params.update({name: value.isoformat() for name, value in (("since", since), ("until", until)) if value})
    with options_for_fields({"actor": "--actor", "action": "--action", "since": "--since", "until": "--until"}):
        events = _fetch(params, limit, api_url)
    if as_json:
        print_json_lines(events)
        return
    out = console()
    if not events:
        out.print("No audit events match.")
        return
    out.print(_audit_table(events, out.width))


def _fetch(params: dict[str, Any], limit: int, api_url: str | None) -> list[Event]:
    """Up to `limit` events, following the API's pages."""
    events: list[Event] = []
    page_token = None
    while len(events) < limit:
        query = {**params, "max_results": min(limit - len(events), MAX_PAGE_SIZE), "page_token": page_token}
        page = call_api("GET", AUDIT_PATH, api_url, params={k: v for k, v in query.items() if v is not None})
        events.extend(page["events"])
        page_token = page.get("next_page_token")
        if not page_token:
            break
    return events


def _detail(detail: dict[str, Any] | None) -> str:
    """`key=value, key=value`, in the API's order: short enough for a table cell, and it says who a token went to."""
    if not detail:
        return "-"
    return ", ".join(f"{key}={_detail_value(value)}" for key, value in detail.items())


def _detail_value(value: Any) -> str:
    # Names read best bare; anything else (numbers, null, lists, objects) as compact JSON, so it stays unambiguous.
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


@dataclass(frozen=True)
class _Column:
    header: str
    cell: Callable[[Event], str]
    whole: bool = False  # kept on one line, never broken: names and ids are grepped and copied; the rest folds


@dataclass(frozen=True)
class _Shape:
    """One way to lay the table out, and the room it must leave the folded columns to be chosen."""

    request_id: bool
    stacked_stamp: bool  # the date over the time: ten columns instead of nineteen
    keep_whole: bool
    folded_room: int  # columns actor, target, outcome and detail share at least


# Preferred first. The request id joins only when it fits whole beside readable folded columns (about 120 columns for
# the server's own ids); at 80 the stamp is stacked; on a terminal too narrow for even that, everything folds rather
# than anything being cut.
_SHAPES = (
    _Shape(request_id=True, stacked_stamp=False, keep_whole=True, folded_room=40),
    _Shape(request_id=False, stacked_stamp=False, keep_whole=True, folded_room=40),
    _Shape(request_id=False, stacked_stamp=True, keep_whole=True, folded_room=16),
    _Shape(request_id=False, stacked_stamp=True, keep_whole=False, folded_room=0),
)


def _columns(shape: _Shape) -> list[_Column]:
    def stamp(event: Event) -> str:
        at = str(event["at"])
        return f"{at[:10]}\n{at[11:19]}" if shape.stacked_stamp else at[:19]

    columns = [
        _Column("at", stamp, whole=shape.keep_whole),
        _Column("actor", lambda event: printable(event["actor"])),
        _Column("action", lambda event: event["action"], whole=shape.keep_whole),
        # A target is the request's path when no resource was named: any text a caller sent, escape sequences too.
        _Column("target", lambda event: printable(event["target"] or "-")),
        _Column("outcome", lambda event: event["outcome"]),
        _Column("detail", lambda event: printable(_detail(event.get("detail")))),
    ]
    if shape.request_id:
        columns.append(_Column("request id", lambda event: event["request_id"] or "-", whole=True))
    return columns


def _folded_room(columns: Sequence[_Column], events: Sequence[Event], width: int) -> int:
    """What the table leaves its folded columns: the width less borders, padding and the whole columns' widths."""
    used = len(columns) + 1 + 2 * len(columns)  # default box: a border around each column; one space each side
    for column in (column for column in columns if column.whole):
        lines = [column.header] + [line for event in events for line in column.cell(event).splitlines()]
        used += max(cell_len(line) for line in lines)
    return width - used


def _audit_table(events: Sequence[Event], width: int) -> Table:
    """The events in the first shape that fits `width`: whole columns get what they need, the rest fold."""
    fits = (shape for shape in _SHAPES if _folded_room(_columns(shape), events, width) >= shape.folded_room)
    shape = next(fits, _SHAPES[-1])
    columns = _columns(shape)
    table = Table()
    for column in columns:
        # A whole column is never narrower than its longest cell, so rich shrinks only the folded ones (no ellipsis).
        table.add_column(column.header, overflow="fold", no_wrap=column.whole)
    for event in events:
        table.add_row(*(column.cell(event) for column in columns))
    return table
