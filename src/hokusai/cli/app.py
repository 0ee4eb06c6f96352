"""The `hokusai` command's Typer app; each command group lives in a module of its own."""

from __future__ import annotations

import typer

from hokusai.cli import audit, auth, keys, models, server, sync, tokens

app = typer.Typer(
    name="hokusai",
    help="Hokusai tokenized model registry: SDK tools, API server and key management.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
for module in (server, keys, auth, models, tokens, audit, sync):
    module.register(app)
