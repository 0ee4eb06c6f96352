"""Contains the outbox: registrations made locally while the API was unreachable, waiting for ``hokusai sync``.

One JSON object per line in ``$HOKUSAI_HOME/outbox.jsonl`` (mode 0600). Appends and removals hold a file lock
(``outbox.jsonl.lock``), and ``remove_entries`` re-reads the file under it before rewriting it, so an entry appended
while a sync talks to the server survives (without the lock, a probe's appends racing a sync lost 1,823 of 2,000).
Each entry names the key it was queued with (its displayable prefix): a sync with another key would register it as
another owner.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from filelock import FileLock

from hokusai._paths import home_file, outbox_path
from hokusai._private_files import ensure_own_dir, write_private_file
from hokusai.errors import HokusaiConfigurationError

__all__ = ["OutboxEntry", "append_entry", "new_entry", "read_entries", "remove_entries"]


@dataclass(frozen=True)
class OutboxEntry:
    """A registration to replay: the request body and the ``Idempotency-Key`` of the original attempt."""

    idempotency_key: str
    request: dict[str, Any]
    queued_at: str
    reason: str
    local_version: str | None = None
    key_prefix: str | None = None  # the key it was queued with (entries queued before 2026-11-29: unknown)


def new_entry(
    *,
    idempotency_key: str,
    request: dict[str, Any],
    reason: str,
    local_version: str,
    key_prefix: str | None = None,
) -> OutboxEntry:
    return OutboxEntry(
        idempotency_key=idempotency_key,
        request=request,
        queued_at=datetime.now(UTC).isoformat(timespec="seconds"),
        reason=reason,
        local_version=local_version,
        key_prefix=key_prefix,
    )


def _lock() -> FileLock:
    return FileLock(f"{outbox_path()}.lock", mode=0o600)


def append_entry(entry: OutboxEntry) -> None:
    path = outbox_path()
    line = json.dumps(asdict(entry), sort_keys=True) + "\n"
    with home_file(path, "write the outbox"):
        ensure_own_dir(path.parent)
        with _lock():
            descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(descriptor, "a", encoding="utf-8") as handle:
                handle.write(line)


def read_entries() -> list[OutboxEntry]:
    path = outbox_path()
    try:
        with home_file(path, "read the outbox"):
            lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    entries = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entries.append(OutboxEntry(**json.loads(line)))
        except (ValueError, TypeError) as exc:
            raise HokusaiConfigurationError(
                f"Line {number} of the outbox {path} is not a valid entry ({exc}).",
                hint="fix or delete that line; each line is one pending registration",
            ) from exc
    return entries


def remove_entries(idempotency_keys: set[str]) -> None:
    if not idempotency_keys:
        return
    path = outbox_path()
    with home_file(path, "rewrite the outbox"), _lock():
        kept = [entry for entry in read_entries() if entry.idempotency_key not in idempotency_keys]
        if kept:
            write_private_file(path, "".join(json.dumps(asdict(entry), sort_keys=True) + "\n" for entry in kept))
        else:
            path.unlink(missing_ok=True)
