"""Contains the outbox: registrations made locally while the API was unreachable, waiting for ``hokusai sync``.

One JSON object per line in ``$HOKUSAI_HOME/outbox.jsonl`` (mode 0600). Appends are single ``write`` calls in
append mode, so two processes registering at once do not interleave lines; ``remove_entries`` re-reads the file
just before rewriting it, so entries appended while a sync talks to the server survive (there is no file lock:
only an append in the instant between that read and the rename could be lost).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from hokusai._paths import ensure_private_dir, outbox_path, write_private_file
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


def new_entry(*, idempotency_key: str, request: dict[str, Any], reason: str, local_version: str) -> OutboxEntry:
    return OutboxEntry(
        idempotency_key=idempotency_key,
        request=request,
        queued_at=datetime.now(UTC).isoformat(timespec="seconds"),
        reason=reason,
        local_version=local_version,
    )


def append_entry(entry: OutboxEntry) -> None:
    path = outbox_path()
    line = json.dumps(asdict(entry), sort_keys=True) + "\n"
    try:
        ensure_private_dir(path.parent)
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(descriptor, "a", encoding="utf-8") as handle:
            handle.write(line)
    except OSError as exc:
        raise HokusaiConfigurationError(
            f"Cannot write the outbox {path} ({exc.strerror}).", hint="set HOKUSAI_HOME to a writable directory"
        ) from exc


def read_entries() -> list[OutboxEntry]:
    path = outbox_path()
    try:
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
    kept = [entry for entry in read_entries() if entry.idempotency_key not in idempotency_keys]
    path = outbox_path()
    if kept:
        write_private_file(path, "".join(json.dumps(asdict(entry), sort_keys=True) + "\n" for entry in kept))
    else:
        path.unlink(missing_ok=True)
