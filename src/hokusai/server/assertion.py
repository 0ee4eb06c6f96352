"""Short-lived identity assertions the gateway hands to MLflow: an HS256 JWT `{sub, adm, aud, iat, exp}`.

The gateway signs; `hokusai.mlflow_auth`, running inside the MLflow server, verifies. Both read the same secret.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import jwt

AUDIENCE = "mlflow"
ALGORITHM = "HS256"
MAX_ASSERTION_LENGTH = 1024


@dataclass(frozen=True)
class Identity:
    username: str
    is_admin: bool


class AssertionSigner:
    """Signs assertions and reuses each for half its lifetime, so the hot path rarely signs."""

    def __init__(self, secret: str, *, ttl_seconds: int = 60) -> None:
        self._secret = secret
        self._ttl = ttl_seconds
        self._cache: dict[Identity, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(secret='**********', ttl_seconds={self._ttl})"

    def assertion_for(self, identity: Identity) -> str:
        now = time.time()
        cached = self._cache.get(identity)
        if cached is not None and cached[1] > now:
            return cached[0]
        issued_at = int(now)
        token = jwt.encode(
            {
                "sub": identity.username,
                "adm": identity.is_admin,
                "aud": AUDIENCE,
                "iat": issued_at,
                "exp": issued_at + self._ttl,
            },
            self._secret,
            algorithm=ALGORITHM,
        )
        with self._lock:
            self._cache[identity] = (token, now + self._ttl / 2)
        return token


def verify_assertion(token: str, secret: str) -> Identity:
    """Return the identity in a valid assertion; raise `jwt.InvalidTokenError` for anything else."""
    if len(token) > MAX_ASSERTION_LENGTH:
        raise jwt.InvalidTokenError("assertion too long")
    claims = jwt.decode(
        token, secret, algorithms=[ALGORITHM], audience=AUDIENCE, options={"require": ["sub", "aud", "iat", "exp"]}
    )
    username = claims["sub"]
    if not isinstance(username, str) or not username:
        raise jwt.InvalidTokenError("assertion has no subject")
    return Identity(username=username, is_admin=claims.get("adm") is True)
