"""What the running API holds: settings, database, key store, audit log and the MLflow upstream."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, QueryParams
from starlette.requests import Request

from hokusai.errors import ErrorCode
from hokusai.server.audit import AuditLog
from hokusai.server.credentials import (
    NOT_A_KEY_AS_BASIC_PASSWORD_MESSAGE,
    UNKNOWN_AS_BASIC_MESSAGE,
    key_from_request,
    sent_as_basic,
)
from hokusai.server.db import Database
from hokusai.server.errors import ApiError
from hokusai.server.keys import (
    REASON_EXPIRED,
    REASON_MALFORMED,
    REASON_REVOKED,
    REASON_ROTATED,
    KeyRejected,
    KeyStore,
    Principal,
)
from hokusai.server.middleware.request_id import ACTOR_STATE
from hokusai.server.secrets import PlatformSecrets
from hokusai.server.settings import Settings
from hokusai.server.upstream import Upstream
from hokusai.validation import MALFORMED_KEY_MESSAGE

logger = logging.getLogger(__name__)

_REJECTION_MESSAGES = {
    REASON_MALFORMED: MALFORMED_KEY_MESSAGE,
    REASON_REVOKED: (
        "This API key was revoked. Create a new one with another valid key of yours (`hokusai keys create`), or ask "
        "an admin for one."
    ),
    REASON_ROTATED: "This API key was revoked when it was rotated: use the key that replaced it (shown once).",
    REASON_EXPIRED: (
        "This API key has expired. Create a new one with another valid key of yours (`hokusai keys create`), or ask "
        "an admin for one."
    ),
}
_NO_QUERY = QueryParams()
_UNKNOWN_MESSAGE = (
    "This API key is not known to this server. Check the key sent (HOKUSAI_API_KEY, MLFLOW_TRACKING_TOKEN or the "
    "saved login)."
)


def _rejection_message(reason: str, headers: Headers) -> str:
    if sent_as_basic(headers):
        # The MLflow client sends a Basic password in place of the token: the one to check is the password.
        if reason == REASON_MALFORMED:
            return NOT_A_KEY_AS_BASIC_PASSWORD_MESSAGE
        if reason not in _REJECTION_MESSAGES:
            return UNKNOWN_AS_BASIC_MESSAGE
    return _REJECTION_MESSAGES.get(reason, _UNKNOWN_MESSAGE)


@dataclass
class AppState:
    settings: Settings
    secrets: PlatformSecrets
    database: Database
    keys: KeyStore
    audit: AuditLog
    upstream: Upstream

    async def authenticate(self, request: Request) -> Principal:
        # Most calls have no query string; parsing an empty one is skipped.
        query = request.query_params if request.scope.get("query_string") else _NO_QUERY
        key = key_from_request(request.headers, query)
        try:
            principal = self.keys.verify_cached(key)
            if principal is None:
                principal = await run_in_threadpool(self.keys.verify, key)
        except KeyRejected as exc:
            raise ApiError(
                401,
                _rejection_message(exc.reason, request.headers),
                error_code=ErrorCode.UNAUTHENTICATED,
            ) from exc
        # The access log names who made each call (see middleware.request_id).
        request.scope.setdefault("state", {})[ACTOR_STATE] = f"{principal.owner}/{principal.key_id}"
        return principal

    async def require_scope(
        self, request: Request, principal: Principal, scope: str, *, purpose: str = "", advice: str = ""
    ) -> None:
        """A 403 (recorded in the audit log) unless the key holds `scope`.

        The message says what the scope was needed for (`purpose`, by default the method and path) and what to do
        (`advice`, by default where a key with the scope comes from).
        """
        if principal.has_scope(scope):
            return
        await run_in_threadpool(
            self.audit.record,
            actor=principal.owner,
            key_id=principal.key_id,
            action="permission.denied",
            outcome="denied",
            target=f"{request.method} {request.url.path}",
            detail={"required_scope": scope},
            request_id=getattr(request.state, "request_id", None),
        )
        purpose = purpose or f"for {request.method} {request.url.path}"
        advice = advice or _scope_advice(scope)
        raise ApiError(
            403,
            f"This key lacks the '{scope}' scope needed {purpose}. {advice}",
            error_code=ErrorCode.PERMISSION_DENIED,
        )

    async def aclose(self) -> None:
        await self.upstream.aclose()
        self.database.close()


def _scope_advice(scope: str) -> str:
    """Where a key with `scope` comes from: a user may make their own read or write key with a key that has the scope
    (a read-only CI key's owner often holds one), so "ask an admin" is only the whole answer for admin."""
    if scope == "admin":
        return "Only an admin key may do this."
    return (
        f"Use a key with the '{scope}' scope: a key of yours that has it can create one (`hokusai keys create "
        f"--scopes {'read,write' if scope == 'write' else 'read'}`), or ask an admin for one."
    )
