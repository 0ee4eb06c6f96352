"""Where the SDK keeps its files, resolved from ``HOKUSAI_HOME``; written owner-only."""

from __future__ import annotations

import getpass
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hokusai.errors import HokusaiConfigurationError

__all__ = [
    "HOME_ENV",
    "credentials_path",
    "ensure_private_dir",
    "hokusai_home",
    "home_file",
    "local_store_dir",
    "mlflow_credentials_path",
    "outbox_path",
    "write_private_file",
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


def ensure_private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def local_store_dir() -> Path:
    """The directory of the local MLflow store, created if needed; a per-user temp dir if the home is read-only."""
    preferred = hokusai_home() / "mock"
    try:
        return ensure_private_dir(preferred)
    except OSError as exc:
        # Stable per user, so a second process finds the same store.
        fallback = Path(tempfile.gettempdir()) / f"hokusai-mock-{getpass.getuser()}"
        logger.warning("cannot create %s (%s); using %s for the local store", preferred, exc, fallback)
        return ensure_private_dir(fallback)


def write_private_file(path: Path, text: str) -> None:
    """Replace ``path`` atomically with a 0600 file in a 0700 directory."""
    ensure_private_dir(path.parent)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    # os.open applies the mode at creation (O_EXCL: never reuse a leftover file with looser permissions),
    # so the content is never readable by others, not even briefly.
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temporary, path)
