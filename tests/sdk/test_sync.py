from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from hokusai import ModelRegistry
from hokusai._outbox import OutboxEntry, append_entry, new_entry, read_entries
from hokusai._paths import outbox_path
from hokusai._sync import SyncResult, sync_outbox
from hokusai.errors import HokusaiConfigurationError
from hokusai.validation import token_already_claimed

from .conftest import KEY, FakeAPI, error

RUN_ID = "0123456789abcdef0123456789abcdef"


def _queue(key: str, model_name: str, token_id: str, model_uri: str = "s3://bucket/m") -> OutboxEntry:
    request = {"model_uri": model_uri, "model_name": model_name, "token_id": token_id, "metric_name": "accuracy"}
    entry = new_entry(idempotency_key=key, request=request, reason="API down", local_version="1")
    append_entry(entry)
    return entry


def _answer(model_name: str, token_id: str, *, status: int, version: str = "7") -> httpx.Response:
    body = {
        "model_name": model_name,
        "version": version,
        "token_id": token_id,
        "metric_name": "accuracy",
        "baseline_value": 0.9,
        "model_uri": f"models:/{model_name}/{version}",
        "source": "s3://bucket/m",
        "created": status == 201,
    }
    return httpx.Response(status, json=body)


def _registry(api: FakeAPI) -> ModelRegistry:
    return ModelRegistry(api_key=KEY, api_url="http://api.test", transport=api.transport)


def test_pushes_each_entry_with_its_stored_key_and_empties_the_outbox() -> None:
    first = _queue("key-1", "churn", "CHURN")
    second = _queue("key-2", "fraud", "FRAUD")
    api = FakeAPI(_answer("churn", "CHURN", status=201), _answer("fraud", "FRAUD", status=200, version="3"))
    results = sync_outbox(_registry(api))
    assert results == [
        SyncResult("churn", "CHURN", "pushed", version="7", queued_at=first.queued_at, local_version="1"),
        SyncResult("fraud", "FRAUD", "already-present", version="3", queued_at=second.queued_at, local_version="1"),
    ]
    assert [request.headers["Idempotency-Key"] for request in api.requests] == ["key-1", "key-2"]
    assert [json.loads(request.content) for request in api.requests] == [first.request, second.request]
    assert not outbox_path().exists()


def test_a_local_run_is_reported_as_failed_and_kept() -> None:
    _queue("key-1", "churn", "CHURN", model_uri=f"runs:/{RUN_ID}/model")
    _queue("key-2", "fraud", "FRAUD")
    api = FakeAPI(
        error(404, "RESOURCE_DOES_NOT_EXIST", f"Run '{RUN_ID}' not found."), _answer("fraud", "FRAUD", status=201)
    )
    failed, pushed = sync_outbox(_registry(api))
    assert (failed.status, pushed.status) == ("failed", "pushed")
    assert failed.reason is not None
    assert failed.reason.startswith(f"404 RESOURCE_DOES_NOT_EXIST from hokusai-api: Run '{RUN_ID}' not found.")
    assert failed.reason.endswith(
        f"-- run {RUN_ID} is not on the platform; it was probably logged to the local MLflow store while the API "
        "was down. Log the model to the platform's MLflow, register it again, then delete this entry."
    )
    assert [entry.idempotency_key for entry in read_entries()] == ["key-1"]
    assert stat.S_IMODE(outbox_path().stat().st_mode) == 0o600


def test_other_failures_keep_the_server_message() -> None:
    _queue("key-1", "churn", "CHURN")
    message = token_already_claimed("CHURN", "x", yours=False)
    (result,) = sync_outbox(_registry(FakeAPI(error(409, "TOKEN_ALREADY_CLAIMED", message))))
    assert result.status == "failed"
    assert result.reason == f"409 TOKEN_ALREADY_CLAIMED from hokusai-api: {message}"
    assert len(read_entries()) == 1


def test_an_unreachable_api_fails_every_entry_without_losing_any(sleeps: list[float]) -> None:
    _queue("key-1", "churn", "CHURN")
    refused = httpx.ConnectError("refused")
    results = sync_outbox(_registry(FakeAPI(refused, refused, refused)))
    assert [result.status for result in results] == ["failed"]
    assert len(read_entries()) == 1


def test_entries_queued_during_a_sync_survive() -> None:
    _queue("key-1", "churn", "CHURN")

    def answer_and_queue_another(request: httpx.Request) -> httpx.Response:
        _queue("key-2", "fraud", "FRAUD")
        return _answer("churn", "CHURN", status=201)

    sync_outbox(_registry(FakeAPI(answer_and_queue_another)))
    assert [entry.idempotency_key for entry in read_entries()] == ["key-2"]


def test_an_empty_outbox_syncs_nothing() -> None:
    api = FakeAPI()
    assert sync_outbox(_registry(api)) == []
    assert api.requests == []


def test_mock_mode_cannot_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOKUSAI_MOCK_MODE", "true")
    with pytest.raises(HokusaiConfigurationError, match="HOKUSAI_MOCK_MODE is on"):
        sync_outbox(ModelRegistry())


def test_a_corrupt_outbox_line_is_named() -> None:
    outbox_path().parent.mkdir(parents=True)
    outbox_path().write_text('{"idempotency_key": "k"}\nnot json\n')
    with pytest.raises(HokusaiConfigurationError, match=r"Line 1 of the outbox .* is not a valid entry"):
        read_entries()


def test_an_entry_queued_with_another_key_is_kept_for_it() -> None:
    """Pushed with this key it would register as this key's owner: a probe's bob synced alice's entry, and owned it."""
    request = {"model_uri": "s3://bucket/m", "model_name": "churn", "token_id": "CHURN", "metric_name": "accuracy"}
    for name, key_prefix in {"with-another-key": "hk_live_ZZZZ", "with-this-one": KEY[:12], "unrecorded": None}.items():
        append_entry(
            new_entry(idempotency_key=name, request=request, reason="down", local_version="1", key_prefix=key_prefix)
        )
    api = FakeAPI(_answer("churn", "CHURN", status=201), _answer("churn", "CHURN", status=200))

    other_key, pushed, unrecorded = sync_outbox(_registry(api))

    assert (other_key.status, pushed.status, unrecorded.status) == ("failed", "pushed", "already-present")
    assert other_key.reason == (
        "queued with the key hk_live_ZZZZ…, which registers as its own owner; sync with that key "
        "(HOKUSAI_API_KEY=<that key> hokusai sync)"
    )
    assert [request.headers["Idempotency-Key"] for request in api.requests] == ["with-this-one", "unrecorded"]
    assert [entry.idempotency_key for entry in read_entries()] == ["with-another-key"]


_APPENDER = """
from hokusai._outbox import append_entry, new_entry
for number in range({count}):
    append_entry(new_entry(idempotency_key=f"queued-{{number}}", request={{}}, reason="down", local_version="1"))
"""
_SYNCER = """
import time
from hokusai._outbox import remove_entries
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    remove_entries({{"never-queued"}})  # re-reads and rewrites the outbox, as every sync does
    if open({path!r}).read().count("queued-") == {count}:
        break
"""


def test_entries_appended_while_a_sync_rewrites_the_outbox_are_all_kept(tmp_path: Path) -> None:
    """Two processes, as a training job registering offline and `hokusai sync` in another shell: without a lock a
    probe's appends racing rewrites lost 1,823 of 2,000."""
    count = 300
    append_entry(new_entry(idempotency_key="first", request={}, reason="down", local_version="1"))
    path = str(outbox_path())
    processes = [
        subprocess.Popen([sys.executable, "-c", code.format(count=count, path=path)]) for code in (_SYNCER, _APPENDER)
    ]
    for process in processes:
        assert process.wait(timeout=60) == 0

    keys = [entry.idempotency_key for entry in read_entries()]
    assert sorted(keys) == sorted(["first", *(f"queued-{number}" for number in range(count))])
