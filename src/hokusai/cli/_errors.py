"""Contains the CLI's one error mapper: a known exception becomes one line and exit code 1."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import NoReturn

import typer

from hokusai._flags import debug
from hokusai._printable import printable
from hokusai.errors import (
    HokusaiAPIError,
    HokusaiAuthError,
    HokusaiConfigurationError,
    HokusaiConflictError,
    HokusaiConnectionError,
    HokusaiError,
    HokusaiKeyMismatchWarning,
    HokusaiNotFoundError,
    HokusaiPermissionError,
    HokusaiRateLimitError,
    HokusaiRegistrationWarning,
    HokusaiValidationError,
)

__all__ = ["CLI_ERROR_MAPPINGS", "DEBUG_HINT", "format_error", "options_for_fields", "run_cli"]

DEBUG_HINT = "Set HOKUSAI_DEBUG=1 for the full traceback."

# Order matters: the first isinstance match wins, so every subclass comes before its base
# (HokusaiAuthError ... HokusaiRateLimitError before HokusaiAPIError, and HokusaiError last).
CLI_ERROR_MAPPINGS: dict[type[HokusaiError], str] = {
    HokusaiValidationError: "Invalid input",
    HokusaiConfigurationError: "Configuration problem",
    HokusaiConnectionError: "Cannot reach the server",
    HokusaiAuthError: "Authentication failed",
    HokusaiPermissionError: "Permission denied",
    HokusaiNotFoundError: "Not found",
    HokusaiConflictError: "Conflict",
    HokusaiRateLimitError: "Rate limited",
    HokusaiAPIError: "Request failed",
    HokusaiError: "Error",
}


def format_error(exc: HokusaiError) -> str:
    """The one line the CLI prints for ``exc``: a label, the message and its hint."""
    label = next(label for cls, label in CLI_ERROR_MAPPINGS.items() if isinstance(exc, cls))
    # A server's message may quote what someone else sent MLflow: escaped, it cannot steer the terminal.
    return printable(f"{label}: {exc}")


@contextmanager
def options_for_fields(options: Mapping[str, str]) -> Iterator[None]:
    """Report a broken input rule against what the user typed (`--baseline`), not the SDK argument (`baseline_value`).

    `options` maps the SDK's field names to the command's option or argument; the error becomes click's usage error
    (exit code 2), as for any other bad option value.
    """
    try:
        yield
    except HokusaiValidationError as exc:
        option = options.get(exc.field) if exc.field is not None else None
        if option is None:
            raise
        raise typer.BadParameter(exc.problem, param_hint=f"'{option}'") from exc


def run_cli(app: typer.Typer, args: Sequence[str] | None = None) -> None:
    """Run ``app`` as the ``hokusai`` program, turning SDK errors into one line and exit code 1.

    Exit codes: 0 success, 1 an error, 2 a usage error (from click). Exceptions that are not SDK errors
    propagate with their traceback, as does every error when ``HOKUSAI_DEBUG`` is on.
    """
    try:
        show_traceback = debug()
    except HokusaiConfigurationError as exc:
        _fail(exc)
    try:
        with warnings.catch_warnings():
            # The warning is for Python code that logs with MLflow as one key and registers as another. A command
            # acts with the Hokusai key alone (its local fallback uses a local store, not MLflow's credential), so
            # here it only repeated itself on every model command in a shell that exports both keys (an admin's,
            # say); `hokusai auth status` still reports the mismatch.
            warnings.simplefilter("ignore", HokusaiKeyMismatchWarning)
            # The model commands print a result's warnings themselves, in their own words.
            warnings.simplefilter("ignore", HokusaiRegistrationWarning)
            app(args=list(args) if args is not None else None, prog_name="hokusai")
    except HokusaiError as exc:
        if show_traceback:
            raise
        _fail(exc)


def _fail(exc: HokusaiError) -> NoReturn:
    typer.echo(format_error(exc), err=True)
    typer.echo(DEBUG_HINT, err=True)
    raise SystemExit(1) from None
