"""The `hokusai` program's entry point.

It loads the commands itself, so that a Ctrl-C in the fraction of a second they take to import (pydantic, httpx,
typer) ends the program as one does once it runs (click's "Aborted!"), not with a traceback of the import.
"""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from hokusai.cli._errors import run_cli
        from hokusai.cli.app import app
    except KeyboardInterrupt:
        print("Aborted!", file=sys.stderr)
        raise SystemExit(1) from None
    run_cli(app)
