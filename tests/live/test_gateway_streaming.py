"""Artifact bodies and their headers through the gateway, checked against the embedded MLflow's own answers.

Answers up to 64 KiB are read whole, larger ones stream through aiohttp's read buffer, which stops reading MLflow
at twice its size until the client catches up; sizes on both sides of those boundaries must arrive whole, and the
pooled MLflow connection must serve the next request. Range, ETag, Content-Type and Content-Disposition must be
MLflow's own: each request goes to MLflow directly (as its admin) and through the gateway, and the two answers are
compared.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator

import httpx
import pytest

from hokusai.server.upstream import MLFLOW_ADMIN_USERNAME, READ_BUFFER_BYTES
from tests.support.platform import LivePlatform

pytestmark = pytest.mark.live

API = "/api/mlflow/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
KIB = 1024
PAUSED_AT = 2 * READ_BUFFER_BYTES
SIZES = [
    0,
    1,
    64 * KIB,
    64 * KIB + 1,
    READ_BUFFER_BYTES + 1,
    PAUSED_AT - 1,
    PAUSED_AT,
    PAUSED_AT + 1,
    3 * PAUSED_AT + 12_345,
]
COMPARED_HEADERS = (
    "content-type",
    "content-disposition",
    "content-length",
    "content-range",
    "accept-ranges",
    "etag",
    "last-modified",
    "x-content-type-options",
)


@pytest.fixture(scope="module")
def user(platform: LivePlatform) -> Iterator[tuple[httpx.Client, str]]:
    """A user's client and the artifact prefix of a run of theirs."""
    client = platform.client(platform.create_key(platform.unique_owner("streaming-"), "read,write"))
    experiment = client.post(API + "/experiments/create", json={"name": platform.unique_owner("streaming-")})
    experiment_id = experiment.json()["experiment_id"]
    run = client.post(API + "/runs/create", json={"experiment_id": experiment_id}).json()["run"]["info"]["run_id"]
    try:
        yield client, f"{ARTIFACTS}/{experiment_id}/{run}/artifacts"
    finally:
        client.close()


@pytest.fixture(scope="module")
def mlflow_admin(platform: LivePlatform) -> Iterator[httpx.Client]:
    """The embedded MLflow itself, as its admin: the reference the gateway's answers are compared with."""
    password = json.loads((platform.data_dir / "secrets.json").read_text())["mlflow_admin_password"]
    with httpx.Client(base_url=platform.mlflow_url, auth=(MLFLOW_ADMIN_USERNAME, password), timeout=60.0) as client:
        yield client


@pytest.mark.parametrize("size", SIZES)
def test_a_download_arrives_whole_and_the_connection_answers_next(
    platform: LivePlatform, user: tuple[httpx.Client, str], size: int
) -> None:
    client, prefix = user
    body = os.urandom(size)
    path = f"/api/mlflow{prefix}/size-{size}.bin"
    assert client.put(path, content=body).status_code == 200

    digest = hashlib.sha256()
    received = 0
    with client.stream("GET", path) as response:
        assert response.status_code == 200
        assert response.headers["content-length"] == str(size)
        for chunk in response.iter_raw():
            digest.update(chunk)
            received += len(chunk)
    assert (received, digest.hexdigest()) == (size, hashlib.sha256(body).hexdigest())

    # The next request reuses the pooled connection the download just released.
    assert client.get(API + "/experiments/search", params={"max_results": 1}).status_code == 200


@pytest.mark.parametrize(
    "request_headers",
    [
        {},
        {"Range": "bytes=100-199"},
        {"Range": "bytes=-10"},
        {"Range": f"bytes={3 * PAUSED_AT}-"},
        {"Range": "bytes=0-0,5-9"},
        {"Range": "bytes=99999999-"},
    ],
    ids=["whole", "middle", "suffix", "open-ended", "multipart", "unsatisfiable"],
)
def test_ranges_and_content_headers_are_mlflows_own(
    user: tuple[httpx.Client, str], mlflow_admin: httpx.Client, request_headers: dict[str, str]
) -> None:
    client, prefix = user
    path = f"{prefix}/ranged model.bin"  # a space: Content-Disposition must quote it as MLflow does
    body = os.urandom(3 * PAUSED_AT + 777)
    assert client.put("/api/mlflow" + path, content=body).status_code == 200

    direct = mlflow_admin.get(path, headers=request_headers)
    proxied = client.get("/api/mlflow" + path, headers=request_headers)

    assert proxied.status_code == direct.status_code
    own_body = ("content-type", "content-length")  # the gateway's, when it re-frames MLflow's answer
    if direct.status_code >= 400:
        # MLflow's plain-text (here empty) errors come wrapped in the envelope, the rest of the answer unchanged.
        assert proxied.json()["layer"] == "mlflow"
        assert proxied.json()["error_code"] == "BAD_REQUEST"
        compared = [name for name in COMPARED_HEADERS if name not in own_body]
    else:
        assert _without_boundary(proxied) == _without_boundary(direct)
        multipart = "boundary=" in direct.headers.get("content-type", "")
        compared = [name for name in COMPARED_HEADERS if not (multipart and name in own_body)]
    for name in compared:
        assert proxied.headers.get(name) == direct.headers.get(name), name
    if "Range" not in request_headers:
        assert direct.content == body


def _without_boundary(response: httpx.Response) -> tuple[str, bytes]:
    """Content type and body, with a multipart answer's boundary (random for each answer) replaced by a constant."""
    content_type = response.headers.get("content-type", "")
    boundary = content_type.partition("boundary=")[2]
    if not boundary:
        return content_type, response.content
    return content_type.replace(boundary, "B"), response.content.replace(boundary.encode(), b"B")


def test_a_conditional_get_with_the_etag_is_answered_as_mlflow_answers_it(
    user: tuple[httpx.Client, str], mlflow_admin: httpx.Client
) -> None:
    client, prefix = user
    path = f"{prefix}/conditional.bin"
    assert client.put("/api/mlflow" + path, content=os.urandom(200 * KIB)).status_code == 200
    etag = client.get("/api/mlflow" + path).headers["etag"]

    for headers in (
        {"If-None-Match": etag},
        {"If-Range": etag, "Range": "bytes=0-9"},
        {"If-Range": '"x"', "Range": "bytes=0-9"},
    ):
        direct = mlflow_admin.get(path, headers=headers)
        proxied = client.get("/api/mlflow" + path, headers=headers)
        assert (proxied.status_code, proxied.content) == (direct.status_code, direct.content), headers
        assert proxied.headers.get("etag") == direct.headers.get("etag") == etag


@pytest.mark.parametrize("size", [10, 3 * PAUSED_AT])
def test_single_valued_headers_arrive_once(user: tuple[httpx.Client, str], size: int) -> None:
    # uvicorn writes its own Date ahead of the app's headers, so a relayed Date from MLflow would make two.
    client, prefix = user
    path = f"/api/mlflow{prefix}/once-{size}.bin"
    assert client.put(path, content=os.urandom(size)).status_code == 200

    for response in (client.get(path), client.get(API + "/experiments/search", params={"max_results": 1})):
        assert response.status_code == 200
        for name in ("date", "content-type", "content-length", "via"):
            assert len(response.headers.get_list(name)) == 1, (name, response.headers.get_list(name))


@pytest.mark.parametrize("size", [10, 3 * PAUSED_AT + 777])
def test_head_answers_with_the_headers_of_a_get(
    user: tuple[httpx.Client, str], mlflow_admin: httpx.Client, size: int
) -> None:
    # MLflow's auth app has no rule for HEAD and refuses it; the gateway asks MLflow for a GET instead and sends
    # only the head of that answer. (A plain MLflow serves HEAD from its Flask app, whose ETag differs from the one
    # its GET sends; the gateway's HEAD carries the GET's, which a later conditional GET can use.)
    client, prefix = user
    path = f"{prefix}/head-{size}.bin"
    assert client.put("/api/mlflow" + path, content=os.urandom(size)).status_code == 200

    direct = mlflow_admin.get(path)
    proxied = client.head("/api/mlflow" + path)

    assert (proxied.status_code, mlflow_admin.head(path).status_code) == (200, 200)
    assert proxied.content == b""
    assert proxied.headers["content-length"] == str(size)
    for name in COMPARED_HEADERS:
        assert proxied.headers.get(name) == direct.headers.get(name), name
    # The connection the HEAD used answers the next request.
    assert client.get(API + "/experiments/search", params={"max_results": 1}).status_code == 200


def test_head_on_a_rest_call_or_a_missing_artifact_has_the_head_of_the_get(
    user: tuple[httpx.Client, str], mlflow_admin: httpx.Client
) -> None:
    # A plain MLflow answers HEAD on its REST calls with a 400 (its handlers read only a GET's query parameters, so
    # a HEAD's look "missing"); the gateway gives the GET's status and headers there too.
    client, prefix = user
    experiment_id = prefix.split("/")[-3]
    for path in (f"/api/2.0/mlflow/experiments/get?experiment_id={experiment_id}", f"{prefix}/never-written.bin"):
        direct = mlflow_admin.get(path)
        proxied = client.head("/api/mlflow" + path)
        assert (proxied.status_code, proxied.content) == (direct.status_code, b""), path
        assert proxied.headers["content-type"] == direct.headers["content-type"].replace(
            "text/plain",
            "application/json",  # MLflow's plain-text errors arrive in the JSON envelope
        ), path
    assert client.head(f"/api/mlflow{prefix}/never-written.bin").status_code == 404


def test_a_hash_in_an_artifact_path_is_mlflows_400_not_a_refusal(
    user: tuple[httpx.Client, str], mlflow_admin: httpx.Client
) -> None:
    client, prefix = user
    experiment_id, run_id = prefix.split("/")[-3:-1]
    for path, params in (
        (f"{prefix}/a%23b.txt", None),
        ("/api/2.0/mlflow-artifacts/artifacts", {"path": f"{experiment_id}/{run_id}/artifacts/dir#1"}),
    ):
        direct = mlflow_admin.get(path, params=params)
        proxied = client.get("/api/mlflow" + path, params=params)
        assert (proxied.status_code, direct.status_code) == (400, 400), proxied.text
        assert proxied.json()["error_code"] == "INVALID_PARAMETER_VALUE"
        assert proxied.json()["message"].startswith("Invalid path")


def test_the_web_uis_job_search_is_forwarded(user: tuple[httpx.Client, str]) -> None:
    client, _ = user
    searched = client.post("/api/mlflow/ajax-api/3.0/jobs/search", json={})
    assert searched.status_code == 200, searched.text
    assert searched.json().get("jobs", []) == []
