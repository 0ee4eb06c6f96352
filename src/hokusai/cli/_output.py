"""Contains the CLI's output helpers: consoles that never read user data as markup, key/value tables, and JSON
Lines for scripts."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from hokusai._printable import printable

__all__ = ["JsonOption", "console", "key_value_table", "print_json_lines", "shown"]

# A pipe or a file has no width, and rich would assume 80 columns: a model URI, a server's message or a table row
# would then be broken over lines where `grep`, `cut` or a log reader expects it whole.
_UNWRAPPED_WIDTH = 10_000

JsonOption = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print JSON Lines (one object per line, as the API returns it) instead of a table, for scripts and jq.",
    ),
]


def console(*, stderr: bool = False) -> Console:
    # markup=False: model names, tags and server messages may contain "[...]", which must print as is.
    # Built per call so the width follows the terminal (or COLUMNS) of this invocation.
    out = Console(markup=False, highlight=False, stderr=stderr)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = _UNWRAPPED_WIDTH
    return out


def shown(value: object) -> str:
    """A value from the server as a terminal may print it. rich passes control and format characters through, so a
    tag or a description someone set straight in MLflow (an escape sequence, a right-to-left override) would steer
    the terminal of whoever lists it; they are escaped (`hokusai._printable`)."""
    return printable(str(value))


def key_value_table(rows: Iterable[tuple[str, object]], *, title: str | None = None) -> Table:
    table = Table(title=title and shown(title), show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column(style="bold")
    table.add_column()
    for name, value in rows:
        table.add_row(shown(name), "-" if value is None or value == [] else shown(value))
    return table


def print_json_lines(items: Iterable[Mapping[str, Any]]) -> None:
    """One compact JSON object per line, through plain echo: a rich console would wrap long lines and break `jq`.

    No items print nothing, which is what JSON Lines of zero objects is.
    """
    for item in items:
        typer.echo(json.dumps(item, separators=(",", ":")))
