"""Contains the CLI's output helpers: consoles that never read user data as markup, and key/value tables."""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Console
from rich.table import Table

__all__ = ["console", "key_value_table"]


def console(*, stderr: bool = False) -> Console:
    # markup=False: model names, tags and server messages may contain "[...]", which must print as is.
    # Built per call so the width follows the terminal (or COLUMNS) of this invocation.
    return Console(markup=False, highlight=False, stderr=stderr)


def key_value_table(rows: Iterable[tuple[str, object]], *, title: str | None = None) -> Table:
    table = Table(title=title, show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column(style="bold")
    table.add_column()
    for name, value in rows:
        table.add_row(name, "-" if value is None or value == [] else str(value))
    return table
