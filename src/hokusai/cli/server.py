"""`hokusai server`: run the whole platform in the foreground."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hokusai.errors import HokusaiConfigurationError


def run_server(
    host: Annotated[str | None, typer.Option(help="Address to bind (HOKUSAI_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port of the API (HOKUSAI_PORT).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where data and secrets live (HOKUSAI_DATA_DIR).")] = None,
) -> None:
    """Start the Hokusai API and its embedded MLflow (Ctrl-C stops both).

    Example: `HOKUSAI_PORT=8080 hokusai server` (settings: .env.example).
    """
    from hokusai.server.mlflow_process import MlflowStartError
    from hokusai.server.runner import StartRefusedError, serve
    from hokusai.server.settings import load_settings

    given = {"host": host, "port": port, "data_dir": data_dir}
    overrides = {name: value for name, value in given.items() if value is not None}
    try:
        settings = load_settings(**overrides)
    except HokusaiConfigurationError as exc:
        typer.echo(f"Invalid configuration: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        serve(settings)
    except (StartRefusedError, MlflowStartError, HokusaiConfigurationError) as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from None


def register(app: typer.Typer) -> None:
    app.command("server")(run_server)
