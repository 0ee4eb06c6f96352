"""The `hokusai` command's Typer app; each command group lives in a module of its own."""

from __future__ import annotations

from typing import Annotated

import typer

from hokusai import __version__
from hokusai.cli import audit, auth, keys, models, server, sync, tokens

app = typer.Typer(
    name="hokusai",
    help="Hokusai tokenized model registry: SDK tools, API server and key management.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"hokusai {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", help="Show the version and exit.", callback=_print_version, is_eager=True),
    ] = False,
) -> None:
    pass  # the options above act on their own (eager callbacks); the app's help is Typer's `help`


for module in (server, keys, auth, models, tokens, audit, sync):
    module.register(app)
