"""Contains ``hokusai sync``: push registrations made while the API was unreachable."""

from __future__ import annotations

import typer
from rich.table import Table

from hokusai._registry import ModelRegistry
from hokusai._sync import sync_outbox
from hokusai.cli._api import ApiUrlOption
from hokusai.cli._output import console

__all__ = ["register"]

_STYLES = {"pushed": "green", "already-present": "cyan", "failed": "red"}


def register(app: typer.Typer) -> None:
    """Add the ``sync`` command to the root app."""
    app.command()(sync)


def sync(api_url: ApiUrlOption = None) -> None:
    """Push registrations queued in $HOKUSAI_HOME/outbox.jsonl to the API; exit 1 if any failed.

    Registrations are queued when HOKUSAI_OPTIONAL_MLFLOW=true and the API was unreachable. Example: `hokusai sync`.
    """
    with ModelRegistry(api_url=api_url) as registry:
        results = sync_outbox(registry)
    out = console()
    if not results:
        out.print("Nothing to sync: the outbox is empty.")
        return
    table = Table("Model", "Token", "Queued (UTC)", "Result", "Version (local → platform)", "Reason")
    for result in results:
        table.add_row(
            result.model_name,
            result.token_id,
            (result.queued_at or "-").replace("T", " ").removesuffix("+00:00"),
            result.status,
            f"{result.local_version or '-'} → {result.version or '-'}",
            result.reason or "",
            style=_STYLES[result.status],
        )
    out.print(table)
    if any(result.status == "failed" for result in results):
        raise typer.Exit(1)
