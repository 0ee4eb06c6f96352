"""Owner-only directories and files, for the SDK's home and the server's data dir alike."""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

from hokusai.errors import HokusaiConfigurationError

__all__ = ["ensure_own_dir", "ensure_private_dir", "write_private_file"]

logger = logging.getLogger(__name__)


def ensure_own_dir(path: Path) -> Path:
    """``path``, a directory of this user's; created, if missing, so that only its owner may enter it.

    One that belongs to another user is refused: whoever owns it could read or replace what is written there (a
    directory under /tmp may have been made in advance by someone else). An existing one of the user's keeps its mode:
    it was their choice, and the files written into it are owner-only.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_uid != os.getuid():
        raise HokusaiConfigurationError(
            f"{path} belongs to another user, who could read or replace what Hokusai writes there.",
            hint="use a directory of your own",
        )
    return path


def ensure_private_dir(path: Path) -> Path:
    """``path`` as `ensure_own_dir` gives it, and closed to others: for the server's data, which is all private (its
    databases, artifacts and secrets). One that was open to others is closed, and said."""
    mode = stat.S_IMODE(ensure_own_dir(path).stat().st_mode)
    if mode != 0o700:
        path.chmod(0o700)
        logger.warning("%s was open to others (mode %03o); it is now private to its owner (0700)", path, mode)
    return path


def write_private_file(path: Path, text: str) -> None:
    """Create or replace ``path`` (in a directory of the user's) owner-only from the first byte on, and durably.

    The temporary file is always new (a leftover one, or a link planted in its place, is removed, not reused with
    its old mode), is named per process so that two writers never share one, and reaches the disk before it
    replaces ``path``: a crash must leave the old file or the new one, never an empty one.
    """
    ensure_own_dir(path.parent)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself, or a first file could vanish in a crash
    finally:
        os.close(directory)
