"""A corpus of malicious requests against the gateway, and forged credentials sent straight to the embedded MLflow.

Every request goes out over a raw socket, byte for byte as written here (no client normalises `..`, encodings or
header values on the way). All are refused with a 4xx, never a 5xx; the gateway's own refusals are its JSON error
envelope. For each request aimed at the gateway, MLflow's access log proves nothing reached the upstream: each
attack carries a unique marker in its path and query, a sentinel request that does reach MLflow is sent after it,
and once the sentinel is logged the log since the attack must not mention the marker.
"""

from __future__ import annotations

import base64
import json
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import jwt
import pytest

from tests.support.platform import LivePlatform

pytestmark = pytest.mark.live

SOCKET_TIMEOUT = 15.0
LOG_WAIT_SECONDS = 10.0
A2 = "/api/mlflow/api/2.0/mlflow"
A3 = "/api/mlflow/api/3.0/mlflow"
AJAX = "/api/mlflow/ajax-api"


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        return json.loads(self.body)


def send_raw(port: int, request: bytes) -> RawResponse:
    """Send `request` as is and read the whole answer (requests say `Connection: close`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as sock:
        sock.sendall(request)
        data = bytearray()
        while chunk := sock.recv(65536):
            data.extend(chunk)
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = _dechunk(body)
    return RawResponse(int(status_line.split(" ")[1]), headers, body)


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out.extend(rest[:size])
        body = rest[size + 2 :]
    return bytes(out)


def http_request(method: str, target: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers)]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass(frozen=True)
class Keys:
    writer: str  # an ordinary user: read,write
    reader: str  # read only
    mlflow_port: int
    secret: str  # the gateway <-> MLflow assertion secret (for the "expired but genuine" case)


@dataclass(frozen=True)
class Attack:
    id: str
    build: Callable[[str, Keys], bytes]  # (marker, keys) -> the raw request
    status: int | tuple[int, ...]
    json_body: bool = True  # False: refused before any app (the HTTP parser), or by MLflow's own Basic check
    direct: bool = False  # sent straight to MLflow, not to the gateway
    error_code: str | None = None
    tags: tuple[str, ...] = field(default=())


def _bearer(key: str) -> tuple[str, str]:
    return ("Authorization", f"Bearer {key}")


def _get(path: str, *, key: str = "writer", method: str = "GET", body: bytes = b"", extra: tuple = ()) -> Callable:
    """An attack on `path` (with `{m}` for the marker) sent with the writer's or reader's key."""

    def build(marker: str, keys: Keys) -> bytes:
        target = path.format(m=marker)
        target += ("&" if "?" in target else "?") + f"m={marker}"
        headers = [_bearer(getattr(keys, key))] if key else []
        headers += [(name, value.format(m=marker)) for name, value in extra]
        if body:
            headers.append(("Content-Type", "application/json"))
        return http_request(method, target, headers, body)

    return build


def _raw(template: str) -> Callable:
    """A hand-written request; `{m}` marker, `{key}` the writer's key, `{mlflow_port}` MLflow's port."""

    def build(marker: str, keys: Keys) -> bytes:
        text = template.format(m=marker, key=keys.writer, mlflow_port=keys.mlflow_port)
        return text.encode("latin-1")

    return build


def _assertion(*, secret: str | None, algorithm: str = "HS256", **claims: object) -> Callable[[Keys], str]:
    def make(keys: Keys) -> str:
        now = int(time.time())
        payload = {"sub": "admin", "adm": True, "aud": "mlflow", "iat": now, "exp": now + 60, **claims}
        payload = {k: v for k, v in payload.items() if v is not None}
        if algorithm == "none":
            return jwt.encode(payload, None, algorithm="none")
        return jwt.encode(payload, keys.secret if secret is None else secret, algorithm=algorithm)

    return make


def _direct(authorization: Callable[[Keys], str], path: str = "/api/2.0/mlflow/users/list") -> Callable:
    def build(marker: str, keys: Keys) -> bytes:
        return http_request("GET", f"{path}?m={marker}", [("Authorization", authorization(keys))])

    return build


def _basic(username: str, password: str) -> Callable[[Keys], str]:
    return lambda _keys: "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


_NOT_FOUND = "ENDPOINT_NOT_FOUND"
_BAD = "BAD_REQUEST"
_INVALID = "INVALID_PARAMETER_VALUE"
_DENIED = "PERMISSION_DENIED"
_UNAUTH = "UNAUTHENTICATED"

ATTACKS: list[Attack] = [
    # --- traversal and encoding tricks: the path must not escape its family ------------------------------------
    Attack("dotdot", _get(A2 + "/{m}/../../2.0/mlflow/users/list"), 400, error_code=_INVALID),
    Attack("dotdot-encoded-lower", _get(A2 + "/{m}/%2e%2e/users/list"), 400, error_code=_INVALID),
    Attack("dotdot-encoded-upper", _get(A2 + "/{m}/%2E%2E/%2E%2E/2.0/mlflow/users/list"), 400, error_code=_INVALID),
    Attack("dotdot-half-encoded", _get(A2 + "/{m}/.%2e/users/list"), 400, error_code=_INVALID),
    Attack("dotdot-encoded-slash", _get(A2 + "/experiments/{m}..%2f..%2fusers%2flist"), 400, error_code=_INVALID),
    Attack("encoded-slash", _get(A2 + "/experiments%2f{m}%2f..%2f..%2fusers%2flist"), 400, error_code=_INVALID),
    Attack("encoded-backslash", _get(A2 + "/experiments/{m}%5c..%5c..%5cusers%5clist"), 400, error_code=_INVALID),
    Attack("raw-backslash", _get(A2 + "/experiments/{m}\\..\\..\\users/list"), 400, error_code=_INVALID),
    Attack("double-slash", _get(A2 + "//{m}/users/list"), 400, error_code=_INVALID),
    Attack("double-slash-after-mount", _get("/api/mlflow//api/2.0/mlflow/{m}/users/list"), 400, error_code=_INVALID),
    Attack("single-dot-segment", _get(A2 + "/./{m}/users/list"), 400, error_code=_INVALID),
    Attack("nul-encoded", _get(A2 + "/experiments/search%00{m}"), 400, error_code=_INVALID),
    Attack("control-char-encoded", _get(A2 + "/experiments/search%0d%0a{m}"), 400, error_code=_INVALID),
    Attack("overlong-utf8-dot", _get(A2 + "/{m}/%c0%ae%c0%ae/users/list"), 400, error_code=_INVALID),
    Attack("overlong-utf8-slash", _get(A2 + "/{m}%c0%af..%c0%afusers/list"), 400, error_code=_INVALID),
    Attack("double-encoded-dotdot", _get(A2 + "/{m}/%252e%252e/users/list"), 400, error_code=_INVALID),
    Attack("double-encoded-slash", _get(A2 + "/experiments/{m}%252f..%252fusers"), 400, error_code=_INVALID),
    Attack("invalid-percent-escape", _get(A2 + "/experiments/{m}%zz"), 400, error_code=_INVALID),
    Attack(
        "artifact-traversal",
        _get("/api/mlflow/api/2.0/mlflow-artifacts/artifacts/{m}/%2e%2e/%2e%2e/%2e%2e/etc/passwd"),
        400,
        error_code=_INVALID,
    ),
    Attack(
        "static-files-traversal-no-key",
        _get("/api/mlflow/static-files/{m}/..%2f..%2f..%2fbasic_auth.ini", key=""),
        400,
        error_code=_INVALID,
    ),
    # --- DNS rebinding: a page on its author's name, re-resolved to this host, with a valid key --------------
    Attack(
        "rebinding-host-name",
        _raw(
            "GET /api/mlflow/api/2.0/mlflow/experiments/search?m={m} HTTP/1.1\r\nHost: attacker.example:8000\r\n"
            "Authorization: Bearer {key}\r\nConnection: close\r\n\r\n"
        ),
        400,
        error_code=_BAD,
    ),
    Attack(
        "rebinding-host-userinfo",
        _raw(
            "GET /api/mlflow/api/2.0/mlflow/experiments/search?m={m} HTTP/1.1\r\nHost: attacker.example@127.0.0.1\r\n"
            "Authorization: Bearer {key}\r\nConnection: close\r\n\r\n"
        ),
        400,
        error_code=_BAD,
    ),
    Attack(
        "two-host-headers",
        _raw(
            "GET /api/mlflow/api/2.0/mlflow/experiments/search?m={m} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Host: attacker.example\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
        ),
        400,
        error_code=_BAD,
    ),
    # --- absolute-form targets and malformed HTTP ------------------------------------------------------------
    Attack(
        "absolute-form-at-mlflow",
        _raw(
            "GET http://127.0.0.1:{mlflow_port}/api/2.0/mlflow/users/list?m={m} HTTP/1.1\r\n"
            "Host: 127.0.0.1:{mlflow_port}\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
        ),
        404,
        error_code=_NOT_FOUND,
    ),
    Attack(
        "absolute-form-through-mount",
        _raw(
            "GET http://127.0.0.1:{mlflow_port}/api/mlflow/api/2.0/mlflow/users/list?m={m} HTTP/1.1\r\n"
            "Host: 127.0.0.1:{mlflow_port}\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
        ),
        403,
        error_code=_DENIED,
    ),
    Attack(
        "crlf-in-header-value",
        _raw(
            "GET /api/mlflow/api/2.0/mlflow/users/list?m={m} HTTP/1.1\r\nHost: x\r\n"
            "X-Note: {m}\rAuthorization: Basic YWRtaW46eA==\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
        ),
        400,
        json_body=False,
    ),
    Attack(
        "lf-in-header-value",
        _raw(
            "GET /api/mlflow/api/2.0/mlflow/users/list?m={m} HTTP/1.1\r\nHost: x\r\n"
            "X-Note: {m}\nX-MLflow-Authorization: Basic YWRtaW46eA==\r\nAuthorization: Bearer {key}\r\n"
            "Connection: close\r\n\r\n"
        ),
        400,
        json_body=False,
    ),
    Attack(
        "obs-fold-header",
        _raw(
            "GET /api/mlflow/api/2.0/mlflow/experiments/search?m={m} HTTP/1.1\r\nHost: x\r\n"
            "Authorization: Bearer {key}\r\n  Basic YWRtaW46eA==\r\nConnection: close\r\n\r\n"
        ),
        400,
        json_body=False,
    ),
    Attack(
        "content-length-and-chunked",
        _raw(
            "POST /api/mlflow/api/2.0/mlflow/experiments/create?m={m} HTTP/1.1\r\nHost: x\r\n"
            "Authorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: 5\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n"
        ),
        400,
        json_body=False,
    ),
    Attack("oversized-header-64k", _get(A2 + "/experiments/search", extra=(("X-Big", "{m}" + "a" * 65536),)), 431),
    Attack(
        "too-many-headers",
        _get(A2 + "/experiments/search", extra=tuple((f"X-H{i}", "{m}") for i in range(300))),
        431,
    ),
    Attack(
        "oversized-authorization",
        _get(A2 + "/experiments/search", key="", extra=(("Authorization", "Bearer hk_live_" + "a" * 20000),)),
        401,
        error_code=_UNAUTH,
    ),
    # --- MLflow user, role and permission administration with a non-admin key --------------------------------
    Attack("admin-users-list", _get(A2 + "/users/list"), 403, error_code=_DENIED),
    Attack(
        "admin-users-create",
        _get(A2 + "/users/create", method="POST", body=b'{"username": "evil", "password": "evil-password-123"}'),
        403,
        error_code=_DENIED,
    ),
    Attack(
        "admin-users-update-admin",
        _get(A2 + "/users/update-admin", method="PATCH", body=b'{"username": "evil", "is_admin": true}'),
        403,
        error_code=_DENIED,
    ),
    Attack("admin-users-delete", _get(A2 + "/users/delete", method="DELETE", body=b'{"username": "admin"}'), 403),
    Attack(
        "admin-permissions-grant",
        _get(
            A3 + "/users/permissions/grant",
            method="POST",
            body=b'{"username": "evil", "resource_type": "experiment", "resource_id": "*", "permission": "MANAGE"}',
        ),
        403,
        error_code=_DENIED,
    ),
    Attack("admin-roles-list", _get(A3 + "/roles/list"), 403, error_code=_DENIED),
    Attack("admin-users-list-ajax", _get(AJAX + "/2.0/mlflow/users/list"), 403, error_code=_DENIED),
    Attack(
        "admin-experiment-permissions-v2",
        _get(A2 + "/experiments/permissions/create", method="POST", body=b"{}"),
        403,
        error_code=_DENIED,
    ),
    # --- features Hokusai does not offer: assistant, AI gateway, MCP, secrets ---------------------------------
    Attack("assistant-stream", _get(AJAX + "/3.0/mlflow/assistant/sessions/{m}/stream"), 403, error_code=_DENIED),
    Attack("ai-gateway-endpoints", _get(A3 + "/gateway/endpoints/list"), 403, error_code=_DENIED),
    Attack(
        "ai-gateway-secret-create",
        _get(A3 + "/gateway/secrets/create", method="POST", body=b'{"secret_name": "x"}'),
        403,
        error_code=_DENIED,
    ),
    Attack("ai-gateway-proxy", _get(AJAX + "/3.0/mlflow/gateway-proxy", method="POST", body=b"{}"), 403),
    Attack(
        "ai-gateway-openai",
        _get("/api/mlflow/gateway/{m}/mlflow/v1/chat/completions", method="POST", body=b"{}"),
        404,
        error_code=_NOT_FOUND,
    ),
    Attack("mcp-servers", _get(A3 + "/mcp-servers/{m}"), 403, error_code=_DENIED),
    # MLflow writes and deletes its demo data as the server, in an experiment no user may change.
    Attack("demo-generate", _get(AJAX + "/3.0/mlflow/demo/generate", method="POST", body=b"{}"), 403),
    Attack("demo-delete", _get(AJAX + "/3.0/mlflow/demo/delete", method="POST", body=b"{}"), 403),
    # JSON nested past Python's recursion limit: the gateway's own read of a run creation refuses it (was a 500).
    Attack(
        "deep-json-run-create",
        _get(A2 + "/runs/create", method="POST", body=b"[" * 100_000 + b"]" * 100_000),
        400,
        error_code=_INVALID,
    ),
    # --- a key in the URL is refused, whatever it is called ------------------------------------------------------
    Attack(
        "key-in-query-api-key",
        lambda m, k: http_request("GET", f"{A2}/experiments/search?max_results=1&api_key={k.writer}&m={m}", []),
        401,
        error_code=_UNAUTH,
    ),
    Attack(
        "key-in-query-with-valid-header",
        lambda m, k: http_request("GET", f"{A2}/experiments/search?x-api-key={k.writer}&m={m}", [_bearer(k.writer)]),
        401,
        error_code=_UNAUTH,
    ),
    Attack(
        "key-in-query-public-path",  # /health needs no key, but MLflow's access log would keep this one
        lambda m, k: http_request("GET", f"/api/mlflow/health?api_key={k.writer}&m={m}", []),
        401,
        error_code=_UNAUTH,
    ),
    Attack(
        "key-in-query-any-name",
        lambda m, k: http_request("GET", f"{A2}/experiments/search?token={k.writer}&m={m}", []),
        401,
        error_code=_UNAUTH,
    ),
    Attack(
        "key-as-query-name-public-path",  # no value at all: the key is the parameter's name
        lambda m, k: http_request("GET", f"/api/mlflow/health?{k.writer}&m={m}", []),
        401,
        error_code=_UNAUTH,
    ),
    # --- writing outside the artifact store --------------------------------------------------------------------
    Attack(
        "experiment-artifacts-on-server-disk",
        _get(A2 + "/experiments/create", method="POST", body=b'{"name": "x", "artifact_location": "/tmp/anywhere"}'),
        403,
        error_code=_DENIED,
    ),
    Attack(
        "experiment-artifacts-on-server-disk-json-name",  # MLflow's parser takes the field's JSON name as well
        _get(A2 + "/experiments/create", method="POST", body=b'{"name": "x", "artifactLocation": "/tmp/anywhere"}'),
        403,
        error_code=_DENIED,
    ),
    # --- paths outside the forwarded families ------------------------------------------------------------------
    Attack("outside-admin", _get("/api/mlflow/admin/{m}"), 404, error_code=_NOT_FOUND),
    Attack("outside-preview", _get("/api/mlflow/api/2.0/preview/mlflow/{m}/experiments/search"), 404),
    Attack("outside-jobs-v2", _get("/api/mlflow/ajax-api/2.0/jobs/{m}/search"), 404, error_code=_NOT_FOUND),
    Attack(  # a job's parameters (its username, experiment and trace ids) would run past MLflow's permissions
        "job-submit",
        _get("/api/mlflow/ajax-api/3.0/jobs/", method="POST", body=b'{"job_name": "{m}", "params": {}}'),
        404,
        error_code=_NOT_FOUND,
    ),
    Attack("outside-signup", _get("/api/mlflow/signup"), 404, error_code=_NOT_FOUND),
    Attack("outside-metrics", _get("/api/mlflow/metrics"), 404, error_code=_NOT_FOUND),
    Attack("outside-api-1", _get("/api/mlflow/api/1.0/mlflow/{m}/users/list"), 404, error_code=_NOT_FOUND),
    # --- scope: a read-only key may not write, however the request is dressed -------------------------------
    Attack(
        "read-key-upload-dressed-as-search",
        _get(
            "/api/mlflow/api/2.0/mlflow-artifacts/mpu/create/{m}/run/artifacts/mlflow/runs/search",
            key="reader",
            method="POST",
            body=b"{}",
        ),
        403,
        error_code=_DENIED,
    ),
    Attack(
        "read-key-method-override",
        _get(
            A2 + "/experiments/create",
            key="reader",
            method="POST",
            body=b'{"name": "ro"}',
            extra=(("X-HTTP-Method-Override", "GET"),),
        ),
        403,
        error_code=_DENIED,
    ),
    Attack(
        "read-key-artifact-put",
        _get("/api/mlflow/api/2.0/mlflow-artifacts/artifacts/0/{m}/artifacts/x.txt", key="reader", method="PUT"),
        403,
        error_code=_DENIED,
    ),
    # --- straight to MLflow with forged or stolen-looking credentials ----------------------------------------
    Attack(
        "direct-assertion-wrong-secret",
        _direct(_assertion(secret="not-the-secret-" * 4)),
        401,
        direct=True,
        error_code=_UNAUTH,
    ),
    Attack("direct-assertion-alg-none", _direct(_assertion(secret="", algorithm="none")), 401, direct=True),
    Attack(
        "direct-assertion-expired",
        _direct(_assertion(secret=None, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)),
        401,
        direct=True,
        error_code=_UNAUTH,
    ),
    Attack("direct-assertion-wrong-audience", _direct(_assertion(secret=None, aud="hokusai")), 401, direct=True),
    Attack("direct-assertion-no-subject", _direct(_assertion(secret=None, sub=None)), 401, direct=True),
    Attack(
        "direct-assertion-hs512-right-secret",
        _direct(_assertion(secret=None, algorithm="HS512")),
        401,
        direct=True,
        error_code=_UNAUTH,
    ),
    Attack(
        "direct-basic-wrong-password", _direct(_basic("admin", "wrong-password")), 401, direct=True, json_body=False
    ),
    Attack("direct-basic-unknown-user", _direct(_basic("nobody", "x")), 401, direct=True, json_body=False),
    Attack(
        "direct-hokusai-key-as-bearer",
        lambda m, k: http_request("GET", f"/api/2.0/mlflow/users/list?m={m}", [_bearer(k.writer)]),
        401,
        direct=True,
        error_code=_UNAUTH,
    ),
    Attack(
        "direct-artifact-forged",
        _direct(_assertion(secret="not-the-secret-" * 4), path="/api/2.0/mlflow-artifacts/artifacts/0/x.txt"),
        401,
        direct=True,
    ),
]


@pytest.fixture(scope="module")
def keys(platform: LivePlatform) -> Keys:
    secret_path = Path(platform.data_dir) / "mlflow" / "assertion_secret"
    return Keys(
        writer=platform.create_key(platform.unique_owner("attacker-"), "read,write"),
        reader=platform.create_key(platform.unique_owner("attacker-ro-"), "read"),
        mlflow_port=platform.mlflow_port,
        secret=secret_path.read_text().strip(),
    )


def _wait_for_sentinel(platform: LivePlatform, offset: int, sentinel: str) -> str:
    """Send a request that does reach MLflow and return the log since `offset` once it shows up."""
    response = httpx.get(platform.url + "/api/mlflow/health", params={"sentinel": sentinel}, timeout=SOCKET_TIMEOUT)
    assert response.status_code == 200
    deadline = time.monotonic() + LOG_WAIT_SECONDS
    while time.monotonic() < deadline:
        log = platform.mlflow_log_since(offset)
        if sentinel in log:
            return log
        time.sleep(0.05)
    pytest.fail(f"the sentinel request never appeared in MLflow's access log within {LOG_WAIT_SECONDS:.0f} s")


def test_corpus_is_large_and_unique() -> None:
    ids = [attack.id for attack in ATTACKS]
    assert len(ids) == len(set(ids))
    assert len([a for a in ATTACKS if not a.direct]) >= 25
    assert len([a for a in ATTACKS if a.direct]) >= 5


# HS512 over the genuine (HS256-sized) secret is meant to be weak: it must be refused for its algorithm.
@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
@pytest.mark.parametrize("attack", ATTACKS, ids=[attack.id for attack in ATTACKS])
def test_attack_is_refused(platform: LivePlatform, keys: Keys, attack: Attack) -> None:
    marker = f"atk{uuid.uuid4().hex[:12]}"
    offset = platform.mlflow_log_size()
    port = keys.mlflow_port if attack.direct else platform.port
    response = send_raw(port, attack.build(marker, keys))

    expected = attack.status if isinstance(attack.status, tuple) else (attack.status,)
    assert response.status in expected, (response.status, response.body[:500])
    assert 400 <= response.status < 500
    if attack.json_body:
        assert response.headers.get("content-type", "").startswith("application/json"), response.headers
        body = response.json()
        assert isinstance(body.get("message"), str) and body["message"]
        if attack.error_code is not None:
            assert body["error_code"] == attack.error_code, body
        if not attack.direct:
            assert body["layer"] == "hokusai-api", body
    if attack.direct:
        assert keys.writer.encode() not in response.body
        return
    log = _wait_for_sentinel(platform, offset, f"sentinel-{marker}")
    leaked = [line for line in log.splitlines() if marker in line and "sentinel" not in line]
    assert not leaked, f"reached MLflow: {leaked}"


def test_a_hokusai_key_sent_to_the_embedded_mlflow_is_told_where_it_belongs(platform: LivePlatform, keys: Keys) -> None:
    """A client pointed at MLflow's own port with a Hokusai key learns to use the API, without its key echoed."""
    response = httpx.get(
        f"http://127.0.0.1:{keys.mlflow_port}/api/2.0/mlflow/experiments/search",
        params={"max_results": 1},
        headers={"Authorization": f"Bearer {keys.writer}"},
        timeout=SOCKET_TIMEOUT,
    )
    assert response.status_code == 401
    payload = response.json()
    assert (payload["error_code"], payload["layer"]) == ("UNAUTHENTICATED", "mlflow")
    assert payload["message"].startswith("This is the MLflow server behind a Hokusai API")
    assert "MLFLOW_TRACKING_URI=<api url>/api/mlflow" in payload["message"]
    assert keys.writer not in response.text
