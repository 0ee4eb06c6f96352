"""Which MLflow paths the gateway forwards, and what each needs: normalisation and the allowlist."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from urllib.parse import unquote

from starlette.datastructures import QueryParams

from hokusai.validation import holds_control_character


class Access(Enum):
    PUBLIC = "public"
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"
    REFUSED = "refused"


@dataclass(frozen=True)
class RoutedPath:
    raw: str  # as the client encoded it; forwarded unchanged once checked
    decoded: str
    access: Access
    counted: bool = True  # against the caller's share of the MLflow connections (see `_UNCOUNTED`)


class PathRejected(Exception):
    """The path names no endpoint the gateway forwards."""


class PathInvalid(PathRejected):
    """The path is malformed or could escape its family once MLflow decodes it; the message says which."""


_MALFORMED = "The request path is malformed (a control character, a backslash, an empty segment or an invalid %-escape)"
_ESCAPES = (
    "The request path has a '.' or '..' segment, or a segment that decodes to one, to a '/' or '\\' (such as %2F "
    "or %5C) or to a control character: MLflow decodes paths repeatedly and would read it as a different path. A "
    "file or artifact name must not contain '/', '\\' or such an escape"
)


# The families an MLflow 3.17 client and its web UI use (docs/architecture.md, step 3); nothing else is forwarded.
# Of the UI's jobs, only search, get and cancel: a job's submission (`POST /ajax-api/3.0/jobs/`) takes its parameters
# (a username, experiment and trace ids) from the client and runs them as MLflow, past its per-user permissions.
_FAMILIES = re.compile(
    r"""/api/(?:2\.0|3\.0)/mlflow/.+
      | /ajax-api/(?:2\.0|3\.0)/mlflow/.+
      | /ajax-api/3\.0/jobs/.+
      | /(?:ajax-)?api/2\.0/mlflow-artifacts/.+
      | /(?:model-versions/)?get-artifact
      | /graphql | /version | /health | /v1/traces
      | /static-files/.+ | /favicon\.ico | /
    """,
    re.VERBOSE,
)
_PUBLIC = re.compile(r"/health|/static-files/.+|/favicon\.ico")
# MLflow's AI gateway, assistant, MCP registry and secrets are not part of the Hokusai product surface; nor is its demo
# data, which MLflow writes and deletes as the server, past every user's permissions.
# Every class below is anchored at the API prefix: an artifact path is free text chosen by the user, so an
# unanchored `.*/mlflow/runs/search` or `.*/permissions/` would let `…/mpu/create/<run>/artifacts/mlflow/runs/search`
# pass as a read (a read-only key starting an upload) and turn an artifact folder named `permissions` admin-only.
_API = r"/(?:ajax-)?api/(?:2\.0|3\.0)/mlflow"
_REFUSED = re.compile(
    _API + r"/(?:gateway|gateway-proxy|assistant|mcp-servers|secrets|endpoints|demo)(?:/.*)?|/gateway/.*"
)
# User, role and permission administration in MLflow's auth app.
_ADMIN = re.compile(_API + r"/(?:users|roles)(?:/.*)?|" + _API + r"/.*/permissions/.*")
# The caller's own identity and grants (the web UI reads both); MLflow's auth app lets any user read their own.
_SELF_SERVICE = re.compile(r"/(?:ajax-)?api/(?:2\.0/mlflow/users/current|3\.0/mlflow/users/current/permissions)")
# Reads that MLflow's API sends as POST (the stock client POSTs get-latest-versions and batchGetInfos); every
# other non-GET method needs the write scope.
_POST_READS = re.compile(
    r"""/graphql
      | API/(?:experiments|runs|logged-models|traces|datasets|registered-models|model-versions|issues)/search
      | API/prompt-optimization/jobs/search
      | /ajax-api/3\.0/jobs/search
      | API/experiments/search-datasets
      | API/traces/(?:batchGet|batchGetInfos|metrics|calculate-filter-correlation)
      | API/registered-models/get-latest-versions
      | API/metrics/get-history-bulk-interval
    """.replace("API", _API),
    re.VERBOSE,
)
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_ARTIFACTS = re.compile(r"/(?:ajax-)?api/2\.0/mlflow-artifacts/")
_HASH = "Invalid path: MLflow refuses an artifact path that contains '#', or an escape of it such as %23"
# A `%` that does not start a two-hex-digit escape is not a valid URI path (RFC 3986); it is refused, not forwarded.
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# MLflow's own path check (`mlflow.utils.uri._decode`) unquotes until the value stops changing, so `%252e%252e`
# means `..` to it. The gateway looks at the same fully-decoded value, so both agree on what a segment is.
_DECODE_ROUNDS = 4


def _decodings(value: str) -> tuple[list[str], bool]:
    """`value` and each decoding of it MLflow would make, and whether it stopped changing within the rounds."""
    seen = [value]
    for _ in range(_DECODE_ROUNDS):
        decoded = unquote(value)
        if decoded == value:
            return seen, True
        value = decoded
        seen.append(value)
    return seen, False


def _escapes(value: str) -> bool:
    seen, settled = _decodings(value)
    # Still changing after several rounds is nested encoding, never produced by a real client. Encoded separators
    # and dot segments are how a path escapes its family; none is legitimate here.
    return not settled or any(
        step in (".", "..") or "/" in step or "\\" in step or holds_control_character(step) for step in seen
    )


def _decode_segments(raw: str) -> str:
    if not raw.startswith("/") or "\\" in raw or holds_control_character(raw) or "//" in raw or _BAD_ESCAPE.search(raw):
        raise PathInvalid(_MALFORMED)
    segments = raw.split("/")[1:]
    decoded = []
    for index, segment in enumerate(segments):
        value = unquote(segment, errors="strict")
        if _escapes(value):
            raise PathInvalid(_ESCAPES)
        if not value and index != len(segments) - 1:
            raise PathInvalid(_MALFORMED)
        decoded.append(value)
    return "/" + "/".join(decoded)


# The same few paths come back on every call (`experiments/search`, `runs/log-batch`, ...), so accepted ones are
# remembered: bounded in count and length, refusals never cached (an attacker cannot fill it with junk paths).
_CACHED_PATHS = 4096
_CACHED_PATH_LENGTH = 256


def rest_and_ajax(path: str) -> tuple[str, str]:
    """A REST path (`path` under `/api`) and the web UI's `/ajax-api` twin, which MLflow serves alike."""
    return "/api" + path, "/ajax-api" + path


# Not counted against a user's share of the MLflow connections: tiny answers MLflow gives at once, which cannot hold a
# connection, and which the stock client asks for without retrying. A 429 on `/version` made it give up sending
# trace spans for the rest of the process, and lose one trace, under 40 threads of tracing (a probe, 2026-11-29).
_UNCOUNTED = re.compile(r"/version|/(?:api|ajax-api)/[23]\.0/mlflow/server-info")


def route_path(raw: str, method: str) -> RoutedPath:
    """Check a request path (relative to the gateway mount) and classify what it needs."""
    if len(raw) <= _CACHED_PATH_LENGTH:
        return _route_path_cached(raw, method)
    return _route_path(raw, method)


def _route_path(raw: str, method: str) -> RoutedPath:
    try:
        decoded = _decode_segments(raw)
    except UnicodeDecodeError as exc:
        raise PathInvalid(_MALFORMED) from exc
    if _FAMILIES.fullmatch(decoded) is None:
        raise PathRejected("not an MLflow endpoint")
    if _ARTIFACTS.match(decoded) and _holds_hash(decoded):
        raise PathInvalid(_HASH)
    access = _access_for(decoded, method)
    return RoutedPath(raw=raw, decoded=decoded, access=access, counted=_UNCOUNTED.fullmatch(decoded) is None)


def check_artifact_query(routed: RoutedPath, query: QueryParams) -> None:
    """The artifact listing names its folder in `?path=`: a '#' there is refused as in the path itself."""
    if _ARTIFACTS.match(routed.decoded) and any(_holds_hash(value) for value in query.getlist("path")):
        raise PathInvalid(_HASH)


def _holds_hash(value: str) -> bool:
    # MLflow's `validate_path_is_safe` refuses '#' after decoding as often as the value changes; a permission check
    # comes first through the gateway, and its 403 would tell the owner of the run that the run is not theirs.
    return any("#" in step for step in _decodings(value)[0])


_route_path_cached = lru_cache(maxsize=_CACHED_PATHS)(_route_path)


def _access_for(path: str, method: str) -> Access:
    if _REFUSED.fullmatch(path):
        return Access.REFUSED
    if _PUBLIC.fullmatch(path) and method in READ_METHODS:
        return Access.PUBLIC
    if _SELF_SERVICE.fullmatch(path) and method in READ_METHODS:
        return Access.READ
    if _ADMIN.fullmatch(path):
        return Access.ADMIN
    if method in READ_METHODS or (method == "POST" and _POST_READS.fullmatch(path)):
        return Access.READ
    return Access.WRITE
