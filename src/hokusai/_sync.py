"""Contains ``sync_outbox``: push registrations made offline to the API, idempotently.

Each outbox entry is replayed as it was first sent. The server recognises a registration it already has (the
same model, token and source) and answers ``200`` (already present) instead of registering it twice.

A registration made offline may point at a run the server cannot see: while the API was down, MLflow runs
were often logged to the local store too, and ``runs:/<local run id>/model`` does not exist on the platform.
Such entries are reported as failed, with that explanation, and stay in the outbox until the model is logged to
the platform's MLflow and registered again (then delete the line from ``$HOKUSAI_HOME/outbox.jsonl``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from hokusai._outbox import OutboxEntry, read_entries, remove_entries
from hokusai._registry import ModelRegistry
from hokusai.errors import HokusaiConfigurationError, HokusaiError, HokusaiNotFoundError
from hokusai.validation import run_id_from_uri

__all__ = ["SyncResult", "sync_outbox"]

SyncStatus = Literal["pushed", "already-present", "failed"]


@dataclass(frozen=True)
class SyncResult:
    """What happened to one outbox entry."""

    model_name: str
    token_id: str
    status: SyncStatus
    version: str | None = None  # the platform's
    reason: str | None = None  # why it failed
    queued_at: str | None = None  # when it was registered locally, ISO 8601 in UTC
    local_version: str | None = None  # its version in the local store


def sync_outbox(registry: ModelRegistry) -> list[SyncResult]:
    """Push every outbox entry to the API; remove the ones the server now has, keep the failed ones."""
    if registry.mode == "mock":
        raise HokusaiConfigurationError(
            "`hokusai sync` pushes to the API, but HOKUSAI_MOCK_MODE is on.", hint="unset HOKUSAI_MOCK_MODE first"
        )
    results: list[SyncResult] = []
    done: set[str] = set()
    for entry in read_entries():
        result = _kept_elsewhere(registry, entry) or _push(registry, entry)
        results.append(result)
        if result.status != "failed":
            done.add(entry.idempotency_key)
    remove_entries(done)
    return results


def _kept_elsewhere(registry: ModelRegistry, entry: OutboxEntry) -> SyncResult | None:
    """A failure, left in the outbox, for an entry queued with another key: pushed with this one it would register
    as this key's owner, who may not be the one who logged the run."""
    if entry.key_prefix is None or entry.key_prefix == registry.key_prefix:
        return None
    reason = (
        f"queued with the key {entry.key_prefix}…, which registers as its own owner; sync with that key "
        "(HOKUSAI_API_KEY=<that key> hokusai sync)"
    )
    return _result(entry, "failed", reason=reason)


def _push(registry: ModelRegistry, entry: OutboxEntry) -> SyncResult:
    try:
        model = registry.send_registration(entry.request, entry.idempotency_key)
    except HokusaiError as exc:
        return _result(entry, "failed", reason=_failure_reason(entry, exc))
    return _result(entry, "pushed" if model.created else "already-present", version=model.version)


def _result(
    entry: OutboxEntry, status: SyncStatus, *, version: str | None = None, reason: str | None = None
) -> SyncResult:
    return SyncResult(
        model_name=str(entry.request.get("model_name")),
        token_id=str(entry.request.get("token_id")),
        status=status,
        version=version,
        reason=reason,
        queued_at=entry.queued_at,
        local_version=entry.local_version,
    )


def _failure_reason(entry: OutboxEntry, exc: HokusaiError) -> str:
    run_id = run_id_from_uri(str(entry.request.get("model_uri", "")))
    # The server answers 404 when the source run does not exist on the platform.
    if run_id is not None and isinstance(exc, HokusaiNotFoundError):
        return (
            f"{exc} -- run {run_id} is not on the platform; it was probably logged to the local MLflow store while "
            "the API was down. Log the model to the platform's MLflow, register it again, then delete this entry."
        )
    return str(exc)
