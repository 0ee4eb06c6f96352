"""Refuses requests whose `Host` names a host the API was not told it serves: the guard against DNS rebinding.

A page on a name its author controls can have that name re-resolved to 127.0.0.1 and then talk to a local API as if
it were the page's own server. Stock MLflow refuses such requests by their `Host` (`--allowed-hosts`); behind the
gateway it cannot, since the gateway sends it the upstream's `Host`, so the check happens here, for the API and the
gateway alike. Accepted: any IP address (a rebinding page always uses a name), `localhost`, the public URL's host and
HOKUSAI_ALLOWED_HOSTS (`Settings.trusted_hosts`), whatever the port. Unlike MLflow's list, HOKUSAI_ALLOWED_HOSTS
adds to these instead of replacing them, and no path is exempt.
"""

from __future__ import annotations

import ipaddress
import re
from fnmatch import fnmatchcase

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from hokusai._printable import printable
from hokusai.errors import ErrorCode
from hokusai.server.errors import error_response

# The name (a bracketed IPv6 address or a registered name) and an optional port; anything else is no Host.
_HOST_HEADER = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9._-]+)(?::[0-9]{0,5})?")
# Most requests carry one of a few Host values; the ones found good are remembered, up to this many.
_REMEMBERED_HOSTS = 64


class TrustedHostMiddleware:
    def __init__(self, app: ASGIApp, trusted_hosts: tuple[str, ...]) -> None:
        self.app = app
        self.trusted_hosts = trusted_hosts
        self.any_host = "*" in trusted_hosts
        self._accepted: set[bytes] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.any_host:
            await self.app(scope, receive, send)
            return
        host = _host_header(scope)
        if host in self._accepted or (host is not None and self._accepts(host)):
            await self.app(scope, receive, send)
            return
        await _refusal(host)(scope, receive, send)

    def _accepts(self, host: bytes) -> bool:
        match = _HOST_HEADER.fullmatch(host.decode("latin-1").lower())
        if match is None:
            return False
        name = match.group(1).removeprefix("[").removesuffix("]").rstrip(".")
        accepted = _is_ip_address(name) or any(fnmatchcase(name, pattern) for pattern in self.trusted_hosts)
        if accepted and len(self._accepted) < _REMEMBERED_HOSTS:
            self._accepted.add(host)
        return accepted


def _host_header(scope: Scope) -> bytes | None:
    hosts = [value for name, value in scope["headers"] if name == b"host"]
    # Two Host headers are a smuggling attempt (RFC 9112 §3.2: a 400), whichever of them is good.
    return hosts[0] if len(hosts) == 1 else None


def _is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _refusal(host: bytes | None) -> JSONResponse:
    if host is None:
        problem = "The request needs exactly one Host header."
    else:
        problem = (
            f"The Host header '{printable(host.decode('latin-1')[:200])}' names a host this API does not serve "
            "(a guard against DNS rebinding). Use the API's address as its operator gave it; an operator adds a "
            "name with HOKUSAI_ALLOWED_HOSTS or HOKUSAI_PUBLIC_URL."
        )
    return error_response(400, problem, error_code=ErrorCode.BAD_REQUEST)
