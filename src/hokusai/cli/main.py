"""The `hokusai` command: one Typer app; each command group lives in a module of its own."""

from __future__ import annotations

import typer

from hokusai.cli import keys, server

app = typer.Typer(
    name="hokusai",
    help="Hokusai tokenized model registry: SDK tools, API server and key management.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
server.register(app)
keys.register(app)


def main() -> None:
    app()
