"""`hokusai audit` against a fake API: the detail column, `--json`, and a table that never cuts names or ids."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

from hokusai import _client
from hokusai.cli import audit
from hokusai.cli._errors import run_cli

from .conftest import KEY, FakeAPI

API = "http://api.test"
SERVER_REQUEST_ID = "req_62a6a0c4e1b2d3f4"  # the server's own shape: "req_" and 16 hex digits
# A caller's own X-Request-ID, which the server keeps: up to 64 characters.
CLIENT_REQUEST_ID = "trace-7d0c5e1a-4b2f-4e8a-9c3d-2f6b8a1e0c97.gateway-eu-west.pod-3"
EVENTS: list[dict[str, Any]] = [
    {
        "id": 6,
        "at": "2026-11-02T09:15:03.120000Z",
        "actor": "admin",
        "key_id": "key_0123456789abcdef",
        "action": "token.release",
        "target": "CHURN",
        "outcome": "ok",
        "detail": {"model_name": "churn-v2", "owner": "bob"},
        "request_id": SERVER_REQUEST_ID,
    },
    {
        "id": 5,
        "at": "2026-11-02T09:14:58Z",
        "actor": "admin",
        "key_id": "key_0123456789abcdef",
        "action": "token.transfer",
        "target": "CHURN",
        "outcome": "ok",
        "detail": {"from": "alice", "model_name": "churn-v2", "to": "bob"},
        "request_id": CLIENT_REQUEST_ID,
    },
    {
        "id": 4,
        "at": "2026-11-02T09:14:50Z",
        "actor": "carol",
        "key_id": "key_fedcba9876543210",
        "action": "permission.denied",
        "target": "POST /api/v1/tokens/CHURN/transfer",
        "outcome": "denied",
        "detail": {"required_scope": "admin"},
        "request_id": "req_9a8b7c6d5e4f3a2b",
    },
    {
        "id": 3,
        "at": "2026-11-02T09:14:40Z",
        "actor": "alice",
        "key_id": "key_1111222233334444",
        "action": "token.claim",
        "target": "CHURN",
        "outcome": "moved",
        "detail": {"from_model_name": "churn", "model_name": "churn-v2"},
        "request_id": "req_1111222233334444",
    },
    {
        "id": 2,
        "at": "2026-11-02T09:14:30Z",
        "actor": "admin",
        "key_id": None,
        "action": "key.create",
        "target": "key_0123456789abcdef",
        "outcome": "ok",
        "detail": None,
        "request_id": None,
    },
]
ACTIONS = [event["action"] for event in EVENTS]


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeAPI:
    """The fake API behind the client `call_api` builds (it imports HokusaiClient from `hokusai._client` per call)."""
    fake = FakeAPI()
    monkeypatch.setenv("HOKUSAI_API_URL", API)
    monkeypatch.setenv("HOKUSAI_API_KEY", KEY)
    monkeypatch.setattr(_client, "HokusaiClient", functools.partial(_client.HokusaiClient, transport=fake.transport))
    return fake


def page(events: Sequence[dict[str, Any]], next_page_token: str | None = None) -> httpx.Response:
    return httpx.Response(200, json={"events": list(events), "next_page_token": next_page_token})


def run_audit(*args: str, columns: int = 200) -> str:
    """`hokusai audit ARGS` in a terminal `columns` wide; its standard output (it must succeed)."""
    app = typer.Typer()
    audit.register(app)
    app.command("unused")(lambda: None)  # two commands, so `audit` is a subcommand as under `hokusai`
    with CliRunner(env={"COLUMNS": str(columns)}).isolation() as (stdout, stderr, _):
        try:
            run_cli(app, ["audit", *args])
        except SystemExit as exc:
            assert not exc.code, stderr.getvalue().decode()
        return stdout.getvalue().decode()


def rows(table: str) -> list[list[str]]:
    """Each body line of a rich table as its cells, stripped."""
    body = table.split("╇", 1)[1].splitlines()[1:]
    return [[cell.strip() for cell in line.rstrip()[1:-1].split("│")] for line in body if line.startswith("│")]


def column(table: str, header: str) -> list[str]:
    """One column's cell lines, top to bottom, with the lines of a folded cell joined back."""
    [heading] = [line for line in table.splitlines() if line.startswith("┃")]
    index = [cell.strip() for cell in heading.rstrip()[1:-1].split("┃")].index(header)
    cells: list[str] = []
    for cells_of_line in rows(table):
        if re.match(r"\d{4}-\d\d-\d\d", cells_of_line[0]) or not cells:  # the date opens each event's row
            cells.append(cells_of_line[index])
        else:
            cells[-1] += cells_of_line[index]
    return cells


def assert_nothing_cut(table: str, columns: int) -> None:
    assert "…" not in table
    assert max(len(line) for line in table.splitlines()) <= columns


def test_detail_is_shown_as_key_value_pairs(api: FakeAPI) -> None:
    api._answers.append(page(EVENTS))
    table = run_audit(columns=250)  # wide enough for each detail on one line, as typed here
    assert column(table, "detail") == [
        "model_name=churn-v2, owner=bob",
        "from=alice, model_name=churn-v2, to=bob",
        "required_scope=admin",
        "from_model_name=churn, model_name=churn-v2",
        "-",
    ]


def test_detail_values_other_than_strings_print_as_compact_json(api: FakeAPI) -> None:
    detail = {"version": 3, "dry_run": False, "previous": None, "tags": ["a", "b"], "source": "s3://bucket/m"}
    api._answers.append(page([{**EVENTS[0], "detail": detail}]))
    assert column(run_audit(), "detail") == [
        'version=3, dry_run=false, previous=null, tags=["a","b"], source=s3://bucket/m'
    ]


def test_detail_folds_rather_than_being_cut_at_80_columns(api: FakeAPI) -> None:
    long_detail = {"from": "alice-" + "a" * 30, "to": "bob-" + "b" * 30, "model_name": "m-" + "c" * 40}
    api._answers.append(page([{**EVENTS[1], "detail": long_detail}]))
    table = run_audit(columns=80)
    assert_nothing_cut(table, 80)
    expected = ", ".join(f"{key}={value}" for key, value in long_detail.items())
    assert column(table, "detail")[0].replace(" ", "") == expected.replace(" ", "")


def test_json_prints_the_api_events_one_per_line_across_pages(api: FakeAPI) -> None:
    api._answers.extend([page(EVENTS[:2], next_page_token="Mw=="), page(EVENTS[2:])])
    stdout = run_audit("--json", "--action", "token.transfer", columns=40)
    # Narrow terminal, long events: each line is still one whole object (nothing wraps), and nothing else is printed.
    assert [json.loads(line) for line in stdout.splitlines()] == EVENTS
    assert stdout.endswith("}\n") and "┃" not in stdout
    assert [dict(request.url.params) for request in api.requests] == [
        {"action": "token.transfer", "max_results": "50"},
        {"action": "token.transfer", "max_results": "48", "page_token": "Mw=="},
    ]


def test_json_with_no_events_prints_nothing(api: FakeAPI) -> None:
    api._answers.append(page([]))
    assert run_audit("--json") == ""


def test_no_events_without_json_says_so(api: FakeAPI) -> None:
    api._answers.append(page([]))
    assert run_audit() == "No audit events match.\n"


def test_actions_stay_whole_at_80_columns(api: FakeAPI) -> None:
    baseline = {**EVENTS[4], "action": "model.register_baseline", "target": "churn/7", "detail": {"source": "r"}}
    api._answers.append(page([*EVENTS, baseline]))
    table = run_audit(columns=80)
    assert_nothing_cut(table, 80)
    # Each action on one line of its cell, nothing folded under it.
    action_lines = [cells[2] for cells in rows(table)]
    assert [line for line in action_lines if line] == [*ACTIONS, "model.register_baseline"]
    # The request id would leave slivers for the rest: it is left out rather than squeezed.
    assert "request id" not in table and SERVER_REQUEST_ID not in table
    assert column(table, "at")[0] == "2026-11-0209:15:03"  # the date over the time, both whole


def test_the_table_at_120_columns_shows_server_request_ids_whole(api: FakeAPI) -> None:
    server_ids_only = [{**event, "request_id": f"req_{event['id']:016x}"} for event in EVENTS]
    api._answers.append(page(server_ids_only))
    table = run_audit(columns=120)
    assert_nothing_cut(table, 120)
    assert column(table, "request id") == [event["request_id"] for event in server_ids_only]
    assert [cells[2] for cells in rows(table) if cells[2]] == ACTIONS
    assert column(table, "at")[0] == "2026-11-02T09:15:03"


def test_request_ids_are_whole_at_200_columns(api: FakeAPI) -> None:
    api._answers.append(page(EVENTS))
    table = run_audit(columns=200)
    assert_nothing_cut(table, 200)
    request_ids = [event["request_id"] or "-" for event in EVENTS]
    assert column(table, "request id") == request_ids
    # Each on one line, as printed: what an admin copies to grep the server log.
    assert all(any(request_id in line for line in table.splitlines()) for request_id in request_ids)
    assert [cells[2] for cells in rows(table) if cells[2]] == ACTIONS
    assert column(table, "detail")[1].replace(" ", "") == "from=alice,model_name=churn-v2,to=bob"  # folded


def test_a_request_id_that_cannot_be_shown_whole_is_left_out(api: FakeAPI) -> None:
    # At 120 columns a 64-character id leaves no room for the rest: no column, rather than an id in pieces.
    api._answers.append(page(EVENTS))
    table = run_audit(columns=120)
    assert_nothing_cut(table, 120)
    assert "request id" not in table and CLIENT_REQUEST_ID[:12] not in table
    assert [cells[2] for cells in rows(table) if cells[2]] == ACTIONS


def test_a_very_narrow_terminal_folds_everything_rather_than_cutting(api: FakeAPI) -> None:
    api._answers.append(page(EVENTS))
    table = run_audit(columns=50)
    assert_nothing_cut(table, 50)
    # Folded into pieces, but every character is there, in order: nothing was cut off.
    assert re.sub(r"\s", "", "".join(cells[2] for cells in rows(table))) == "".join(ACTIONS)


def test_times_are_iso_dates_with_an_example_when_not(api: FakeAPI) -> None:
    api._answers.append(page(EVENTS))
    run_audit("--since", "2026-11-01", "--until", "2026-11-02T09:30+02:00")
    params = api.requests[0].url.params
    assert (params["since"], params["until"]) == ("2026-11-01T00:00:00", "2026-11-02T09:30:00+02:00")
    app = typer.Typer()
    audit.register(app)
    app.command("unused")(lambda: None)
    with CliRunner(env={"COLUMNS": "200"}).isolation() as (_stdout, stderr, _):
        with pytest.raises(SystemExit) as exited:
            run_cli(app, ["audit", "--since", "yesterday"])
        printed = " ".join(stderr.getvalue().decode().replace("│", " ").split())
    assert exited.value.code == 2
    assert "Invalid value for '--since': must be a date or a date and time, e.g. 2026-11-01" in printed
    assert len(api.requests) == 1  # the bad value sent nothing
