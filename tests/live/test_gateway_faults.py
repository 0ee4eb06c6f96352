"""MLflow dies, or freezes, in the middle of a request: the gateway fails fast and cleanly, then recovers on its own.

This disrupts the platform it runs against, so it starts a platform of its own instead of the session one, with
upstream read and write timeouts of a few seconds (the defaults, 600 s, suit multi-GB artifacts).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psutil
import pytest

from hokusai.server.client_watch import WATCH_AFTER_SECONDS
from hokusai.server.request_head import NOT_HTTP_MESSAGE
from tests.support.platform import LivePlatform, start_platform
from tests.support.raw_http import get_request, raw_request

pytestmark = pytest.mark.live

API = "/api/mlflow/api/2.0/mlflow"
ARTIFACTS = "/api/mlflow/api/2.0/mlflow-artifacts/artifacts"
CHUNK = b"x" * 16384
CHUNK_INTERVAL = 0.05
MAX_CHUNKS = 400  # 20 s of upload at most: the generator always ends
SAFETY_BOUND_SECONDS = 10.0  # only guards against a hang; the expected figure (~2 s or less) is recorded, not asserted
RECOVERY_TIMEOUT = 120.0
UPSTREAM_TIMEOUT_SECONDS = 3
STALLED_UPLOAD_CHUNK = b"s" * (1024 * 1024)
STALLED_UPLOAD_MAX_CHUNKS = 512  # far more than the socket buffers between the client and a frozen MLflow hold
CLIENT_BODY_TIMEOUT_SECONDS = 6  # above the slow client's 4.5 s pause, which must not be cut off
CLIENT_HEADER_TIMEOUT_SECONDS = 4
CLIENT_SEND_TIMEOUT_SECONDS = 3
CONNECTIONS_PER_USER = 4
STALLED_DOWNLOAD_BYTES = 64 * 1024 * 1024  # far more than the socket buffers between a stalled reader and MLflow
TRICKLE_INTERVAL = 0.5


@pytest.fixture(scope="module")
def own_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivePlatform]:
    live = start_platform(
        tmp_path_factory.mktemp("faults") / "data",
        HOKUSAI_KEY_CACHE_TTL_SECONDS="2",
        HOKUSAI_UPSTREAM_READ_TIMEOUT_SECONDS=str(UPSTREAM_TIMEOUT_SECONDS),
        HOKUSAI_UPSTREAM_WRITE_TIMEOUT_SECONDS=str(UPSTREAM_TIMEOUT_SECONDS),
        HOKUSAI_UPSTREAM_CALL_TIMEOUT_SECONDS=str(UPSTREAM_TIMEOUT_SECONDS),
        HOKUSAI_CLIENT_BODY_TIMEOUT_SECONDS=str(CLIENT_BODY_TIMEOUT_SECONDS),
        HOKUSAI_CLIENT_HEADER_TIMEOUT_SECONDS=str(CLIENT_HEADER_TIMEOUT_SECONDS),
        HOKUSAI_CLIENT_SEND_TIMEOUT_SECONDS=str(CLIENT_SEND_TIMEOUT_SECONDS),
        HOKUSAI_UPSTREAM_MAX_CONNECTIONS_PER_USER=str(CONNECTIONS_PER_USER),
        # One connection more than one user's share: the bystander below is served only thanks to the share.
        HOKUSAI_UPSTREAM_MAX_CONNECTIONS=str(CONNECTIONS_PER_USER + 1),
    )
    try:
        yield live
    finally:
        live.stop()
        for pid in live.mlflow_child_pids():  # ours: never leave a restarted MLflow behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _is_unavailable(response: httpx.Response) -> bool:
    if response.status_code != 503:
        return False
    body = response.json()
    return body["error_code"] == "TEMPORARILY_UNAVAILABLE" and body["layer"] == "hokusai-api"


def test_mlflow_killed_mid_upload_then_recovers(
    own_platform: LivePlatform, record_property: Callable[[str, object], None]
) -> None:
    platform = own_platform
    server_pid = platform.process.pid
    key = platform.create_key(platform.unique_owner("faults-"), "read,write")
    client = platform.client(key)
    experiment = client.post(API + "/experiments/create", json={"name": "faults"}).json()["experiment_id"]
    run = client.post(API + "/runs/create", json={"experiment_id": experiment}).json()["run"]["info"]["run_id"]
    upload_url = f"{platform.url}{ARTIFACTS}/{experiment}/{run}/artifacts/slow.bin"

    # 1. A slow streamed upload is under way when every MLflow process is SIGKILLed.
    streaming = threading.Event()
    outcome: dict[str, Any] = {}

    def chunks() -> Iterator[bytes]:
        for index in range(MAX_CHUNKS):
            if index == 10:
                streaming.set()
            yield CHUNK
            time.sleep(CHUNK_INTERVAL)

    def upload() -> None:
        try:
            outcome["response"] = httpx.put(
                upload_url, content=chunks(), headers={"Authorization": f"Bearer {key}"}, timeout=60.0
            )
        except httpx.TransportError as exc:
            outcome["error"] = exc
        outcome["finished"] = time.monotonic()

    # A download is under way too, read slowly, so that MLflow dies in the middle of its answer.
    download_request = _large_download_request(client, experiment, run)
    downloaded = {"bytes": 0}

    def download() -> None:
        with socket.create_connection(("127.0.0.1", platform.port), timeout=SAFETY_BOUND_SECONDS) as sock:
            sock.sendall(download_request)
            with contextlib.suppress(ConnectionError, TimeoutError):
                while chunk := sock.recv(256 * 1024):
                    downloaded["bytes"] += len(chunk)
                    time.sleep(0.05)

    downloader = threading.Thread(target=download, daemon=True)
    downloader.start()
    uploader = threading.Thread(target=upload, daemon=True)
    uploader.start()
    assert streaming.wait(30), "the upload never started streaming"
    assert downloaded["bytes"] > 0, "the download never started"
    victims = platform.mlflow_child_pids()
    assert victims, "no MLflow process found to kill"
    killed_at = time.monotonic()
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    # 2. The in-flight request ends promptly: a 503 JSON with Retry-After, or a dropped connection.
    uploader.join(MAX_CHUNKS * CHUNK_INTERVAL + 30)
    assert "finished" in outcome, "the upload never returned"
    elapsed = outcome["finished"] - killed_at
    record_property("kill_to_answer_seconds", round(elapsed, 3))
    print(f"in-flight upload answered {elapsed:.2f} s after MLflow was killed (target: within 2 s)")
    assert elapsed < SAFETY_BOUND_SECONDS
    if "response" in outcome:
        response = outcome["response"]
        assert _is_unavailable(response), (response.status_code, response.text)
        assert int(response.headers["retry-after"]) > 0
    # The download's answer had begun: its connection is cut (short of its Content-Length), with one log line.
    downloader.join(SAFETY_BOUND_SECONDS)
    assert not downloader.is_alive(), "the download's connection was never cut"
    assert downloaded["bytes"] < STALLED_DOWNLOAD_BYTES
    log = platform.stderr_path.read_text()
    assert "MLflow's answer broke off" in log
    assert "Exception in ASGI application" not in log

    # 3. While MLflow is down, requests get the same 503 JSON (and the readiness probe says why). A key made now is
    # still issued (its MLflow account is set up on first use); that first use, a bare run that also needs the new
    # user's default experiment, is the same 503.
    down = client.get(API + "/experiments/get", params={"experiment_id": experiment})
    ready_while_down = httpx.get(platform.url + "/ready", timeout=10.0)
    newcomer = platform.create_key(platform.unique_owner("faults-new-"), "read,write")
    with platform.client(newcomer) as fresh:
        first_use = fresh.post(API + "/runs/create", json={})
    assert _is_unavailable(down), (down.status_code, down.text)
    assert int(down.headers["retry-after"]) > 0
    assert ready_while_down.status_code == 503
    assert _is_unavailable(first_use), (first_use.status_code, first_use.text)

    # 4. The supervisor restarts MLflow; the gateway picks it up by itself.
    deadline = time.monotonic() + RECOVERY_TIMEOUT
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(platform.url + "/ready", timeout=5.0).status_code == 200:
                break
        time.sleep(0.5)
    else:
        pytest.fail(f"MLflow was not back within {RECOVERY_TIMEOUT:.0f} s")
    record_property("recovery_seconds", round(time.monotonic() - killed_at, 1))

    assert platform.process.poll() is None and platform.process.pid == server_pid, "the gateway was restarted"
    assert not set(victims) & set(platform.mlflow_child_pids())
    again = client.get(API + "/experiments/get", params={"experiment_id": experiment})
    assert again.status_code == 200, again.text
    assert again.json()["experiment"]["name"] == "faults"
    retried = client.put(upload_url.removeprefix(platform.url), content=b"complete")
    assert retried.status_code == 200, retried.text
    assert client.get(upload_url.removeprefix(platform.url)).content == b"complete"
    logged = client.post(API + "/runs/log-metric", json={"run_id": run, "key": "after", "value": 1.0, "timestamp": 1})
    assert logged.status_code == 200, logged.text
    client.close()
    with platform.client(newcomer) as fresh:
        bare_run = fresh.post(API + "/runs/create", json={})
    assert bare_run.status_code == 200, bare_run.text


@contextlib.contextmanager
def _frozen(platform: LivePlatform) -> Iterator[None]:
    """MLflow stopped (SIGSTOP): its sockets stay open and the kernel still takes bytes, but nothing reads them."""
    pids = platform.mlflow_child_pids()
    assert pids, "no MLflow process found to freeze"
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def _is_deadline(response: httpx.Response) -> bool:
    body = response.json()
    return response.status_code == 504 and body["error_code"] == "DEADLINE_EXCEEDED" and body["layer"] == "hokusai-api"


def _user_run(platform: LivePlatform, stem: str) -> tuple[httpx.Client, str, str]:
    platform.wait_ready(RECOVERY_TIMEOUT)
    client = platform.client(platform.create_key(platform.unique_owner(stem), "read,write"))
    experiment = client.post(API + "/experiments/create", json={"name": platform.unique_owner(stem)})
    assert experiment.status_code == 200, experiment.text
    experiment_id = experiment.json()["experiment_id"]
    run = client.post(API + "/runs/create", json={"experiment_id": experiment_id})
    return client, experiment_id, run.json()["run"]["info"]["run_id"]


def test_mlflow_that_stops_answering_gets_a_504(
    own_platform: LivePlatform, record_property: Callable[[str, object], None]
) -> None:
    client, experiment, _ = _user_run(own_platform, "frozen-read-")
    with _frozen(own_platform):
        started = time.monotonic()
        response = client.get(API + "/experiments/get", params={"experiment_id": experiment})
        elapsed = time.monotonic() - started
    record_property("frozen_read_answered_seconds", round(elapsed, 2))
    assert _is_deadline(response), (response.status_code, response.text)
    assert UPSTREAM_TIMEOUT_SECONDS <= elapsed < UPSTREAM_TIMEOUT_SECONDS + SAFETY_BOUND_SECONDS
    # Thawed, MLflow answers again on a fresh upstream connection.
    assert client.get(API + "/experiments/get", params={"experiment_id": experiment}).status_code == 200


def test_the_registry_answers_504_when_mlflow_stops_answering(
    own_platform: LivePlatform, record_property: Callable[[str, object], None]
) -> None:
    # The API's own calls to MLflow have a timeout of their own (HOKUSAI_UPSTREAM_CALL_TIMEOUT_SECONDS), far below
    # the gateway's, which is sized for multi-GB artifacts: otherwise the SDK times out first and blames the API.
    client, _, run = _user_run(own_platform, "frozen-registry-")
    with _frozen(own_platform):
        started = time.monotonic()
        response = client.get("/api/v1/models/tokenized")
        elapsed = time.monotonic() - started
    record_property("frozen_registry_answered_seconds", round(elapsed, 2))
    assert _is_deadline(response), (response.status_code, response.text)
    assert elapsed < UPSTREAM_TIMEOUT_SECONDS + SAFETY_BOUND_SECONDS
    assert client.get(API + "/runs/get", params={"run_id": run}).status_code == 200


def test_mlflow_that_stops_reading_an_upload_gets_a_504(
    own_platform: LivePlatform, record_property: Callable[[str, object], None]
) -> None:
    """aiohttp has no write timeout of its own: the gateway watches the upload's progress into MLflow instead."""
    client, experiment, run = _user_run(own_platform, "frozen-write-")
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        for _ in range(STALLED_UPLOAD_MAX_CHUNKS):
            yield STALLED_UPLOAD_CHUNK
            sent += len(STALLED_UPLOAD_CHUNK)

    response: httpx.Response | None = None
    with _frozen(own_platform):
        started = time.monotonic()
        try:
            response = client.put(f"{ARTIFACTS}/{experiment}/{run}/artifacts/stalled.bin", content=chunks())
        except httpx.TransportError:
            response = None  # the gateway closed while the client was still sending: also an answer, not a hang
        elapsed = time.monotonic() - started
    record_property("frozen_write_answered_seconds", round(elapsed, 2))
    print(f"upload into a frozen MLflow ended after {elapsed:.2f} s, {sent / 1e6:.0f} MB sent, answer {response}")
    assert elapsed < UPSTREAM_TIMEOUT_SECONDS + SAFETY_BOUND_SECONDS
    assert sent < len(STALLED_UPLOAD_CHUNK) * STALLED_UPLOAD_MAX_CHUNKS, "the whole body went through: no stall"
    if response is not None:
        assert _is_deadline(response), (response.status_code, response.text)
    assert client.get(API + "/runs/get", params={"run_id": run}).status_code == 200


def test_a_client_pausing_longer_than_the_write_timeout_is_not_cut_off(own_platform: LivePlatform) -> None:
    """The write timeout counts only time MLflow leaves a chunk untaken, never time spent waiting for the client."""
    client, experiment, run = _user_run(own_platform, "slow-client-")
    pause = UPSTREAM_TIMEOUT_SECONDS + 1.5

    def chunks() -> Iterator[bytes]:
        yield b"first half, "
        time.sleep(pause)
        yield b"second half"

    path = f"{ARTIFACTS}/{experiment}/{run}/artifacts/paused.txt"
    response = client.put(path, content=chunks())
    assert response.status_code == 200, response.text
    assert client.get(path).content == b"first half, second half"


def _send_then_stall(
    platform: LivePlatform, target: str, key: str, declared: int, part: bytes
) -> tuple[int, dict[str, str], dict[str, object], float]:
    """Send a request head declaring `declared` body bytes and only `part` of them; then read until the server closes.

    Returns the status, headers, JSON body and seconds from the stall to the answer. A server that never answers
    or never closes fails the test through the socket timeout instead of hanging it.
    """
    method, path = target.split(" ", 1)
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{platform.port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
    )
    with socket.create_connection(
        ("127.0.0.1", platform.port), timeout=CLIENT_BODY_TIMEOUT_SECONDS + SAFETY_BOUND_SECONDS
    ) as sock:
        sock.sendall(head.encode() + part)
        stalled_at = time.monotonic()
        received = bytearray()
        while chunk := sock.recv(65536):  # ends only when the server closes the connection
            received.extend(chunk)
        elapsed = time.monotonic() - stalled_at
    return (*_parse_answer(bytes(received)), elapsed)


def _parse_answer(received: bytes) -> tuple[int, dict[str, str], dict[str, object]]:
    """Status, headers and JSON body of the one answer a server wrote before closing the connection."""
    raw_head, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = raw_head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines)}
    return int(status_line.split()[1]), headers, json.loads(body)


def _files_settle_to(client: httpx.Client, path: str, expected: list[tuple[str, int]]) -> bool:
    """The artifact listing becomes `expected` within a few seconds.

    MLflow removes the staging file of an upload that broke off when it notices the closed connection, which can be
    a moment after the client got its 408.
    """
    deadline = time.monotonic() + SAFETY_BOUND_SECONDS
    while True:
        listing = client.get(ARTIFACTS, params={"path": path}).json().get("files", [])
        files = [(item["path"], int(item["file_size"])) for item in listing]
        if files == expected or time.monotonic() > deadline:
            return files == expected
        time.sleep(0.2)


@pytest.mark.parametrize("kind", ["artifact upload (streamed to MLflow)", "MLflow JSON call", "Hokusai API call"])
def test_a_client_that_stops_sending_its_body_gets_a_408_and_nothing_is_stored(
    own_platform: LivePlatform, kind: str, record_property: Callable[[str, object], None]
) -> None:
    client, experiment, run = _user_run(own_platform, "stalled-body-")
    key = str(client.headers["Authorization"]).removeprefix("Bearer ")
    artifact = f"{ARTIFACTS}/{experiment}/{run}/artifacts/model.bin"
    original = b"version one" * 1000
    assert client.put(artifact, content=original).status_code == 200
    if kind.startswith("artifact"):
        target, declared, part = f"PUT {artifact}", 10_000_000, b"v2" * 500_000
    elif kind.startswith("MLflow"):
        target, declared, part = f"POST {API}/runs/log-metric", 200, b'{"run_id": "' + run.encode()
    else:
        target, declared, part = "POST /api/v1/keys", 200, b'{"owner": "stalled", "scopes": ["re'
        key = own_platform.admin_key

    status, headers, body, elapsed = _send_then_stall(own_platform, target, key, declared, part)

    record_property("stalled_body_answered_seconds", round(elapsed, 2))
    assert status == 408, body
    assert body["error_code"] == "DEADLINE_EXCEEDED" and body["layer"] == "hokusai-api", body
    assert headers["connection"] == "close"  # and the loop above saw the server close it
    assert CLIENT_BODY_TIMEOUT_SECONDS * 0.9 <= elapsed < CLIENT_BODY_TIMEOUT_SECONDS + SAFETY_BOUND_SECONDS
    # Nothing from the broken request was stored, and what was there before is intact.
    assert client.get(artifact).content == original
    assert _files_settle_to(client, f"{experiment}/{run}/artifacts", [("model.bin", len(original))])
    metrics = client.get(API + "/runs/get", params={"run_id": run}).json()["run"]["data"]
    assert "metrics" not in metrics
    with own_platform.client(own_platform.admin_key) as admin:
        owners = {item["owner"] for item in admin.get("/api/v1/keys", params={"all": "true"}).json()["keys"]}
    assert "stalled" not in owners


def _trickle_head_until_closed(platform: LivePlatform, key: str) -> tuple[bytes, int, float]:
    """Send a request head one byte every TRICKLE_INTERVAL, never finishing it, until the server closes.

    Returns what the server wrote, how many bytes were sent, and the seconds from connect to the close. Bounded by
    SAFETY_BOUND_SECONDS past the header timeout, so a server that never closes fails the test instead of hanging it.
    """
    head = (
        f"GET {API}/experiments/search HTTP/1.1\r\nHost: 127.0.0.1:{platform.port}\r\n"
        f"Authorization: Bearer {key}\r\nX-Slow: " + "a" * 200
    ).encode()
    deadline = time.monotonic() + CLIENT_HEADER_TIMEOUT_SECONDS + SAFETY_BOUND_SECONDS
    with socket.create_connection(("127.0.0.1", platform.port), timeout=SAFETY_BOUND_SECONDS) as sock:
        opened = time.monotonic()
        sent = 0
        while sent < len(head) and time.monotonic() < deadline:
            try:
                sock.sendall(head[sent : sent + 1])
            except OSError:  # closed under us while trickling: what was answered is read below
                break
            sent += 1
            readable, _, _ = select.select([sock], [], [], TRICKLE_INTERVAL)
            if readable:
                break
        received = bytearray()
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                received.extend(chunk)
        return bytes(received), sent, time.monotonic() - opened


def test_a_request_head_that_trickles_in_gets_a_408_and_the_connection_closes(
    own_platform: LivePlatform, record_property: Callable[[str, object], None]
) -> None:
    """Slowloris: a byte every half second keeps the connection busy but never extends the header deadline."""
    key = own_platform.create_key(own_platform.unique_owner("slow-head-"), "read")

    received, sent, elapsed = _trickle_head_until_closed(own_platform, key)

    # A deadline that restarted with every byte would never close this connection: the read above would time out.
    record_property("trickled_head_closed_after_seconds", round(elapsed, 2))
    record_property("trickled_head_bytes_sent", sent)
    status, headers, body = _parse_answer(received)
    assert status == 408, body
    assert body["error_code"] == "DEADLINE_EXCEEDED" and body["layer"] == "hokusai-api", body
    assert str(CLIENT_HEADER_TIMEOUT_SECONDS) in str(body["message"])
    assert headers["connection"] == "close"
    assert key not in received.decode("latin-1")


def test_a_connection_that_never_sends_a_byte_is_closed_without_an_answer(own_platform: LivePlatform) -> None:
    with socket.create_connection(
        ("127.0.0.1", own_platform.port), timeout=CLIENT_HEADER_TIMEOUT_SECONDS + SAFETY_BOUND_SECONDS
    ) as sock:
        assert sock.recv(65536) == b""  # EOF: closed by the server, nothing written


def test_an_idle_keep_alive_connection_outlives_the_header_timeout(own_platform: LivePlatform) -> None:
    """Between requests the keep-alive timeout (75 s) governs; the header deadline starts at the next first byte."""
    connection = http.client.HTTPConnection("127.0.0.1", own_platform.port, timeout=SAFETY_BOUND_SECONDS)
    try:
        connection.request("GET", "/api/mlflow/health")
        first = connection.getresponse()
        assert first.status == 200 and first.read() == b"OK"
        socket_before = connection.sock
        time.sleep(CLIENT_HEADER_TIMEOUT_SECONDS + 1.5)
        connection.request("GET", "/api/mlflow/health")
        second = connection.getresponse()
        assert second.status == 200 and second.read() == b"OK"
        assert connection.sock is socket_before  # the same connection answered, not a reconnect
    finally:
        connection.close()


def test_a_request_head_that_keeps_growing_gets_a_431_and_the_connection_closes(own_platform: LivePlatform) -> None:
    """One unfinished header value, sent in pieces as fast as the socket takes them: cut off, and nobody else waits."""
    received = bytearray()
    with socket.create_connection(("127.0.0.1", own_platform.port), timeout=SAFETY_BOUND_SECONDS) as sock:
        sock.sendall(b"GET /api/mlflow/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        with contextlib.suppress(ConnectionError):  # the server may close while a piece is still on its way
            for _ in range(1024):  # 64 MiB at most: far past any head limit, and the loop always ends
                sock.sendall(b"a" * 65536)
                if select.select([sock], [], [], 0)[0]:  # answered: stop, so little is left unread to reset on
                    break
        with contextlib.suppress(ConnectionError):
            while chunk := sock.recv(65536):
                received.extend(chunk)
        with httpx.Client(base_url=own_platform.url, timeout=SAFETY_BOUND_SECONDS) as client:
            assert client.get("/health").status_code == 200  # the server is still answering

    status, headers, body = _parse_answer(bytes(received))
    assert status == 431, body
    assert (body["error_code"], body["layer"]) == ("BAD_REQUEST", "hokusai-api"), body
    assert headers["connection"] == "close"


@pytest.mark.parametrize("path", ["/api/v1/no-such-route", "/api/mlflow/api/2.0/mlflow/experiments/search"])
def test_trailer_fields_that_keep_coming_are_cut_off(own_platform: LivePlatform, path: str) -> None:
    """No key needed: a route that does not exist answers at once, and uvicorn read the trailers after the last chunk
    into the request's headers for as long as they came (a probe: 50 MB of them took 550 MB of the server's memory).
    Through the gateway the key is refused first and the connection closed, as before."""
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"
    trailer = b"".join(b"X-%d: v\r\n" % i for i in range(5000))  # 50 KB
    pieces = 500  # 25 MB: far past the limit, and the loop always ends
    with socket.create_connection(("127.0.0.1", own_platform.port), timeout=SAFETY_BOUND_SECONDS) as sock:
        sock.sendall(head.encode())
        sent = 0
        with contextlib.suppress(ConnectionError):  # the server closed: the rest cannot be sent
            while sent < pieces:
                sock.sendall(trailer)
                sent += 1
        first = b""
        with contextlib.suppress(ConnectionError):  # a reset may take the answer with it
            first = sock.recv(65536)
    with httpx.Client(base_url=own_platform.url, timeout=SAFETY_BOUND_SECONDS) as client:
        assert client.get("/health").status_code == 200

    assert sent < pieces, "the server took every trailer field"
    if first:  # refused for the route, the key, or (through the gateway) for the headers the trailers became
        status, _headers, body = _parse_answer(first)
        assert (status, body["error_code"]) in (
            (404, "ENDPOINT_NOT_FOUND"),
            (401, "UNAUTHENTICATED"),
            (431, "BAD_REQUEST"),
        ), body


def test_a_request_httptools_cannot_parse_gets_a_400_envelope(own_platform: LivePlatform) -> None:
    request = (
        b"POST /api/v1/keys HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    answer = raw_request(own_platform.port, request)

    assert answer.status == 400 and answer.headers["content-type"] == "application/json", answer.body
    assert answer.json() == {
        "error_code": "BAD_REQUEST",
        "message": NOT_HTTP_MESSAGE,
        "layer": "hokusai-api",
    }


@contextlib.contextmanager
def _stalled_reader(platform: LivePlatform, request: bytes) -> Iterator[socket.socket]:
    """A connection that sends `request` and reads nothing of the answer until the caller does."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
        sock.settimeout(SAFETY_BOUND_SECONDS)
        sock.connect(("127.0.0.1", platform.port))
        sock.sendall(request)
        yield sock


def _large_download_request(client: httpx.Client, experiment: str, run: str) -> bytes:
    """Uploads a large artifact to the run and returns the raw GET request for it, with the client's key."""
    path = f"{ARTIFACTS}/{experiment}/{run}/artifacts/big.bin"
    assert client.put(path, content=b"d" * STALLED_DOWNLOAD_BYTES).status_code == 200
    key = client.headers["authorization"].removeprefix("Bearer ")
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\r\n".encode()


def _connections_to_mlflow(platform: LivePlatform) -> int:
    gateway = psutil.Process(platform.process.pid)
    return sum(
        1
        for connection in gateway.net_connections(kind="tcp")
        if connection.raddr
        and connection.raddr.port == platform.mlflow_port
        and connection.status == psutil.CONN_ESTABLISHED
    )


def _connection_from(platform: LivePlatform, client_port: int) -> bool:
    """Whether the gateway still holds its end of the connection from the client's `client_port`."""
    gateway = psutil.Process(platform.process.pid)
    return any(
        connection.raddr and connection.raddr.port == client_port for connection in gateway.net_connections(kind="tcp")
    )


def test_a_client_that_stops_reading_a_download_is_cut_off_and_frees_its_mlflow_connection(
    own_platform: LivePlatform,
) -> None:
    """A download nobody reads must not hold one of the gateway's pooled MLflow connections for ever."""
    client, experiment, run = _user_run(own_platform, "stalled-reader-")
    request = _large_download_request(client, experiment, run)

    with _stalled_reader(own_platform, request) as sock:
        time.sleep(1.0)  # the download starts, fills every buffer on its way, and stalls
        assert _connections_to_mlflow(own_platform) >= 1
        # Idle pooled connections close after 4 s on their own; the stalled one only if the gateway cuts it off.
        deadline = time.monotonic() + CLIENT_SEND_TIMEOUT_SECONDS + 4 + SAFETY_BOUND_SECONDS
        while _connections_to_mlflow(own_platform) and time.monotonic() < deadline:
            time.sleep(0.25)
        assert _connections_to_mlflow(own_platform) == 0, "the stalled download still holds an MLflow connection"
        # The client's connection goes too, though it never read: a close would wait for it to take what was queued
        # (megabytes), and the socket stayed for as long as the client kept it open.
        client_port = sock.getsockname()[1]
        while _connection_from(own_platform, client_port) and time.monotonic() < deadline:
            time.sleep(0.25)
        assert not _connection_from(own_platform, client_port), "the stalled client's socket is still open"
        received = 0
        with contextlib.suppress(ConnectionError):
            while chunk := sock.recv(1024 * 1024):  # what was buffered, then the end: the server closed
                received += len(chunk)
    assert received < STALLED_DOWNLOAD_BYTES
    assert "client took nothing of the answer" in own_platform.stderr_path.read_text()
    assert client.get(API + "/runs/get", params={"run_id": run}).status_code == 200


def test_requests_whose_clients_hang_up_while_mlflow_is_slow_free_their_share(own_platform: LivePlatform) -> None:
    """A probe froze MLflow and sent 32 requests whose clients then gave up: they held the owner's share until MLflow
    answered, and the owner's next request was a 429 with nothing of theirs in progress."""
    client, _experiment, run = _user_run(own_platform, "impatient-")
    key = client.headers["authorization"].removeprefix("Bearer ")
    request = get_request(f"{API}/runs/get?run_id={run}", [(b"Authorization", f"Bearer {key}".encode())])
    with _frozen(own_platform):
        sockets = [socket.create_connection(("127.0.0.1", own_platform.port)) for _ in range(CONNECTIONS_PER_USER)]
        for sock in sockets:
            sock.sendall(request)
        # Past the gateway's grace time, all of them waiting for MLflow, and well before the read timeout that
        # ended them before (UPSTREAM_TIMEOUT_SECONDS, a 504 each).
        time.sleep(WATCH_AFTER_SECONDS + 0.2)
        assert _connections_to_mlflow(own_platform) >= CONNECTIONS_PER_USER
        for sock in sockets:
            sock.close()  # the clients give up
        deadline = time.monotonic() + SAFETY_BOUND_SECONDS
        while _connections_to_mlflow(own_platform) >= CONNECTIONS_PER_USER and time.monotonic() < deadline:
            time.sleep(0.25)
        assert _connections_to_mlflow(own_platform) < CONNECTIONS_PER_USER, "abandoned requests hold MLflow connections"
        # Their share is free again: the next request waits for MLflow like any other instead of a 429.
        with pytest.raises(httpx.ReadTimeout):
            client.get(API + "/runs/get", params={"run_id": run}, timeout=WATCH_AFTER_SECONDS + 1)
    log = own_platform.stderr_path.read_text()
    # The four, each before its read timeout (a 504 in the log before); and the last one, whose client gave up too.
    assert log.count(f"client hung up before MLflow answered: GET {API}/runs/get") >= CONNECTIONS_PER_USER, log[-3000:]
    assert client.get(API + "/runs/get", params={"run_id": run}).status_code == 200


def test_one_user_cannot_take_every_mlflow_connection(own_platform: LivePlatform) -> None:
    """Past their share of in-flight requests a user gets a 429; other users are served, and so is the user later."""
    client, experiment, run = _user_run(own_platform, "greedy-")
    other, _, _ = _user_run(own_platform, "bystander-")
    request = _large_download_request(client, experiment, run)

    with contextlib.ExitStack() as stalled:
        for _ in range(CONNECTIONS_PER_USER):
            stalled.enter_context(_stalled_reader(own_platform, request))
        time.sleep(1.0)  # well within the send timeout: all of them hold their MLflow connections
        refused = client.get(API + "/runs/get", params={"run_id": run})
        served = other.post(API + "/experiments/search", json={"max_results": 1})
        # The stock client asks for these without retrying (a 429 on /version stopped its trace uploads): uncounted.
        version = client.get("/api/mlflow/version")
        server_info = client.get("/api/mlflow/api/3.0/mlflow/server-info")

    assert (version.status_code, server_info.status_code) == (200, 200), (version.text, server_info.text)
    assert refused.status_code == 429, refused.text
    assert (refused.json()["error_code"], refused.json()["layer"]) == ("REQUEST_LIMIT_EXCEEDED", "hokusai-api")
    assert "retry-after" not in refused.headers  # the MLflow client's own backoff applies
    assert served.status_code == 200, served.text
    deadline = time.monotonic() + CLIENT_SEND_TIMEOUT_SECONDS + SAFETY_BOUND_SECONDS
    while (later := client.get(API + "/runs/get", params={"run_id": run})).status_code == 429:
        assert time.monotonic() < deadline, "the user's share never came back after the stalled downloads ended"
        time.sleep(0.25)
    assert later.status_code == 200, later.text


def test_a_registration_mlflow_did_not_answer_in_time_leaves_no_claim_to_take_another_users_version(
    own_platform: LivePlatform,
) -> None:
    """After a 504, bob's retry found his kept claim and took alice's version unchecked (security review)."""
    own_platform.wait_ready(RECOVERY_TIMEOUT)
    alice = own_platform.client(own_platform.create_key(own_platform.unique_owner("alice-"), "read,write"))
    bob = own_platform.client(own_platform.create_key(own_platform.unique_owner("bob-"), "read,write"))
    admin = own_platform.client(own_platform.admin_key)
    token = own_platform.unique_owner("tok-").upper()
    request = {
        "model_uri": f"s3://bucket/{token.lower()}",  # no run: nothing is read from MLflow before the claim
        "model_name": own_platform.unique_owner("alices-"),
        "token_id": token,
        "metric_name": "accuracy",
        "baseline_value": 0.9,
    }
    assert alice.post("/api/v1/models/tokenized", json=request).status_code == 201
    assert admin.delete(f"/api/v1/tokens/{token}").status_code == 200
    assert bob.get("/api/v1/models/tokenized").status_code == 200  # bob's MLflow account exists before the freeze

    with _frozen(own_platform):
        timed_out = bob.post("/api/v1/models/tokenized", json=request)
    unclaimed = admin.get(f"/api/v1/tokens/{token}")
    retry = bob.post("/api/v1/models/tokenized", json=request)

    assert _is_deadline(timed_out), (timed_out.status_code, timed_out.text)
    assert unclaimed.status_code == 404, unclaimed.text  # nothing can carry a claim the version search timed out on
    assert (retry.status_code, retry.json()["layer"]) == (403, "mlflow"), retry.text
    assert admin.get(f"/api/v1/tokens/{token}").status_code == 404
    again = alice.post("/api/v1/models/tokenized", json=request)
    assert (again.status_code, again.json()["version"]) == (200, "1"), again.text
    for client in (alice, bob, admin):
        client.close()
