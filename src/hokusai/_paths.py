"""Where the SDK keeps its files, resolved from ``HOKUSAI_HOME``; written owner-only."""

from __future__ import annotations

import getpass
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hokusai._private_files import ensure_own_dir
from hokusai.errors import HokusaiConfigurationError

__all__ = [
    "HOME_ENV",
    "credentials_path",
    "hokusai_home",
    "home_file",
    "local_store_dir",
    "mlflow_credentials_path",
    "outbox_path",
]

HOME_ENV = "HOKUSAI_HOME"

logger = logging.getLogger(__name__)


def hokusai_home() -> Path:
    """``$HOKUSAI_HOME`` if set and non-empty, else ``~/.hokusai``."""
    configured = os.environ.get(HOME_ENV, "").strip()
    return Path(configured).expanduser() if configured else Path.home() / ".hokusai"


def credentials_path() -> Path:
    return hokusai_home() / "credentials"


def outbox_path() -> Path:
    return hokusai_home() / "outbox.jsonl"


def mlflow_credentials_path() -> Path:
    # The file MLflow's own client reads (mlflow/utils/credentials.py).
    return Path.home() / ".mlflow" / "credentials"


@contextmanager
def home_file(path: Path, doing: str) -> Iterator[None]:
    """A file under ``HOKUSAI_HOME`` that cannot be used (the home is a file, or not writable) as the configuration
    error it is: one line from the CLI, not an ``OSError`` traceback. A file that does not exist is the caller's."""
    try:
        yield
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise HokusaiConfigurationError(
            f"Cannot {doing} {path} ({exc.strerror or exc}).", hint=f"set {HOME_ENV} to a writable directory"
        ) from exc


def local_store_dir() -> Path:
    """The directory of the local MLflow store, created if needed; a per-user temp dir if the home is read-only."""
    preferred = hokusai_home() / "mock"
    try:
        return ensure_own_dir(preferred)
    except OSError as exc:
        # Stable per user, so a second process finds the same store.
        fallback = Path(tempfile.gettempdir()) / f"hokusai-mock-{getpass.getuser()}"
        logger.warning("cannot create %s (%s); using %s for the local store", preferred, exc, fallback)
        return ensure_own_dir(fallback)
