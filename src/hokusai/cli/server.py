"""`hokusai server`: run the whole platform in the foreground."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError


def run_server(
    host: Annotated[str | None, typer.Option(help="Address to bind (HOKUSAI_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port of the API (HOKUSAI_PORT).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where data and secrets live (HOKUSAI_DATA_DIR).")] = None,
) -> None:
    """Start the Hokusai API and its embedded MLflow (Ctrl-C stops both).

    Example: `HOKUSAI_PORT=8080 hokusai server` (settings: .env.example).
    """
    from hokusai.server.mlflow_process import MlflowStartError
    from hokusai.server.runner import PortInUseError, serve
    from hokusai.server.settings import Settings

    overrides = {name: value for name, value in {"host": host, "port": port, "data_dir": data_dir}.items() if value}
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        typer.echo(f"Invalid configuration: {_problems(exc)}", err=True)
        raise typer.Exit(2) from exc
    try:
        serve(settings)
    except (PortInUseError, MlflowStartError) as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from exc


def _problems(exc: ValidationError) -> str:
    """Each broken setting by the variable the operator sets; never the value, which may be a secret."""
    problems = []
    for error in exc.errors():
        fields = [str(part) for part in error["loc"]]
        name = f"HOKUSAI_{'_'.join(fields).upper()}" if fields else "settings"
        problems.append(f"{name}: {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(problems)


def register(app: typer.Typer) -> None:
    app.command("server")(run_server)
