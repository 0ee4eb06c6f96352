"""Contains ``hokusai login``, ``logout``, ``whoami`` and ``hokusai auth status``."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.table import Table

from hokusai._client import HokusaiClient, fetch_identity
from hokusai._credentials import (
    API_KEY_ENV,
    Setting,
    check_key_shape,
    delete_credentials,
    key_and_url,
    lookup_api_key,
    refused_key_fix,
    resolve_api_url,
    without_userinfo,
    write_credentials,
)
from hokusai._flags import current_mode, mock_mode_error
from hokusai._paths import credentials_path
from hokusai.cli._api import ApiUrlOption, checked_api_url
from hokusai.cli._output import console, key_value_table
from hokusai.config import get_mlflow_auth_status
from hokusai.errors import HokusaiAuthError, HokusaiConfigurationError
from hokusai.validation import key_prefix

__all__ = ["auth_app", "register"]

auth_app = typer.Typer(help="Check how the SDK and MLflow authenticate.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add ``login``, ``logout``, ``whoami`` and the ``auth`` group to the root app."""
    app.command()(login)
    app.command()(logout)
    app.command()(whoami)
    app.add_typer(auth_app, name="auth")


def _stdin_is_terminal() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def _read_key() -> str:
    """The key, from a hidden prompt; from standard input when that is not a terminal (`… | hokusai login`)."""
    if _stdin_is_terminal():
        return str(typer.prompt("Hokusai API key", hide_input=True))
    if sys.stdin is None:
        return ""  # no input at all: reported as no key entered
    # getpass would warn that input may be echoed. Some terminals (mintty, IDE consoles) are not ttys: say what is
    # awaited, on standard error so that standard output stays clean.
    typer.echo("Hokusai API key (read from standard input): ", err=True, nl=False)
    return sys.stdin.readline()


def login(
    key: Annotated[
        str | None,
        typer.Option("--key", help="The API key. Omit it to be prompted (hidden): options end up in shell history."),
    ] = None,
    api_url: Annotated[
        str | None,
        typer.Option("--api-url", help="The API root, e.g. http://127.0.0.1:8000.", callback=checked_api_url),
    ] = None,
) -> None:
    """Check an API key with the server, then save it to $HOKUSAI_HOME/credentials.

    Examples: `hokusai login`, `hokusai login --api-url https://hokusai.example.com`.
    """
    secret = (key if key is not None else _read_key()).strip()
    if not secret:
        raise HokusaiConfigurationError("No API key entered.", hint="paste the key issued by `hokusai keys create`")
    try:
        check_key_shape(Setting(secret, "login"))  # before anything is sent or saved
    except HokusaiConfigurationError as exc:
        if key is None:
            raise
        raise typer.BadParameter(exc.user_message, param_hint="'--key'") from None
    url = resolve_api_url(api_url)
    # Validate before saving, so a typo never replaces a working key.
    with HokusaiClient(secret, api_url=url) as client:
        try:
            identity = fetch_identity(client)
        except HokusaiAuthError as exc:
            hint = f"nothing was saved; check that the key was copied whole and that {url} is the server that issued it"
            raise exc.with_hint(hint) from None
    write_credentials(api_key=secret, api_url=url)
    out = console()
    out.print(
        f"Logged in to {url} as {identity.get('owner')} (key {key_prefix(secret)}…, scopes: {_scopes(identity)})."
    )
    out.print(f"Saved to {credentials_path()} (readable by you only).")
    overriding = (os.environ.get(API_KEY_ENV) or "").strip()
    if overriding and overriding != secret:
        console(stderr=True).print(
            f"Warning: {API_KEY_ENV} is set and takes precedence over the saved key; unset it to use the saved key.",
            style="yellow",
        )


def logout() -> None:
    """Delete the saved credentials file. Example: `hokusai logout`."""
    out = console()
    if delete_credentials():
        out.print(f"Logged out: removed {credentials_path()}.")
    else:
        out.print(f"Not logged in: there is no {credentials_path()}.")
    if (os.environ.get(API_KEY_ENV) or "").strip():
        console(stderr=True).print(f"Warning: {API_KEY_ENV} is still set in this environment.", style="yellow")


def whoami(api_url: ApiUrlOption = None) -> None:
    """Show who the current API key belongs to. Example: `HOKUSAI_API_KEY=hk_live_… hokusai whoami`."""
    if current_mode() == "mock":  # also refuses a mistyped flag, as every other command does
        raise mock_mode_error()
    if lookup_api_key() is None:
        console(stderr=True).print("Not logged in. Run `hokusai login` first.")
        raise typer.Exit(1)
    found, url = key_and_url(api_url=api_url)
    with HokusaiClient(found.value, api_url=url.value, refused_key_hint=refused_key_fix(found)) as client:
        identity = fetch_identity(client)
    rows = [
        ("owner", identity.get("owner")),
        ("key", f"{identity.get('key_prefix') or key_prefix(found.value)}… (from {found.source})"),
        ("scopes", _scopes(identity)),
        ("expires", identity.get("expires_at") or "never"),
        ("api", without_userinfo(url.value)),
    ]
    console().print(key_value_table(rows))


@auth_app.command("status")
def status(api_url: ApiUrlOption = None) -> None:
    """Show the API and MLflow settings, where each comes from, whether they work, and what to fix.

    Exits 1 when there is a problem to fix; notes (e.g. that only code calling `hokusai.setup()` gets the key) do
    not change the exit code. Example: `hokusai auth status`.
    """
    report = get_mlflow_auth_status(api_url=api_url)
    out = console()
    out.print(key_value_table(_status_rows(report), title="Hokusai authentication"))
    notes, problems = report["notes"], report["problems"]
    if notes:
        out.print(_findings_table(notes, "note", title="Notes", style="bold yellow"))
    if problems:
        out.print(_findings_table(problems, "problem", title="Problems", style="bold red"))
        raise typer.Exit(1)
    if notes:
        # "No problems found." alone would read as "all is well" right under something the user must know.
        out.print(f"No problems found, but read the {'notes' if len(notes) > 1 else 'note'} above.", style="yellow")
    else:
        out.print("No problems found.", style="green")


def _findings_table(findings: list[dict[str, str]], field: str, *, title: str, style: str) -> Table:
    table = Table(title=title, title_style=style)
    for header in (field.capitalize(), "Fix"):
        table.add_column(header, overflow="fold")  # a fix is copied as is: folded, never cut with an ellipsis
    for finding in findings:
        table.add_row(finding[field], finding["fix"])
    return table


def _status_rows(report: dict[str, Any]) -> list[tuple[str, object]]:
    credential = report["credential"]
    if report["credential_source"]:
        credential += f" (from {report['credential_source']})"
    # Mock mode makes no network call, so "no" would be misleading.
    checked = _yes_no if report["mode"] != "mock" else lambda _value: "not checked (mock mode)"
    return [
        ("mode", report["mode"]),
        ("api url", report["api_url"]),
        ("key", f"{report['key_prefix']}…" if report["key_prefix"] else None),
        ("reachable", checked(report["reachable"])),
        ("key accepted", _key_verdict(report, checked)),
        ("owner", report["owner"]),
        ("scopes", ", ".join(report["scopes"]) or None),
        ("expires", report["expires_at"]),
        ("mlflow tracking uri", f"{report['tracking_uri']} ({report['tracking_uri_source']})"),
        ("mlflow credential", credential),
        ("mlflow accepted", "not checked" if report["mlflow_accepted"] is None else checked(report["mlflow_accepted"])),
        ("outbox", f"{report['outbox_pending']} pending"),
    ]


def _key_verdict(report: dict[str, Any], checked: Callable[[object], str]) -> str:
    # A key is judged only by a server that answered; mock mode asks none.
    if report["mode"] == "mock" or report["reachable"]:
        return checked(report["key_accepted"])
    return "not checked (API unreachable)"


def _scopes(identity: dict[str, Any]) -> str:
    return ", ".join(identity.get("scopes") or []) or "none"


def _yes_no(value: object) -> str:
    return "yes" if value else "no"
