"""The route class of the `/api/v1` routers: FastAPI's, refusing first a request body the API would misread."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.datastructures import Headers

from hokusai.errors import HokusaiValidationError
from hokusai.server.errors import ApiError, is_json_media_type
from hokusai.validation import FLOAT_UNDERFLOW, first_repeated, json_nodes, json_path

_NO_CODING = "identity"


class ApiRoute(APIRoute):
    """FastAPI's route, which first refuses a body sent compressed, or whose JSON `json.loads` would change.

    FastAPI reads a body with `Request.json()`: `json.loads`, which keeps the last of a repeated key and reads a
    number too small for a float as 0, and knows no `Content-Encoding`. A custom `Request` overriding `json()` could
    not say so: FastAPI answers every error of that call but a JSON syntax error with its own "There was an error
    parsing the body". So the body is checked here, before FastAPI reads it; API bodies are small, and reading one
    twice costs microseconds.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()
        if self.body_field is None:
            return handle  # FastAPI never reads the body of a route that takes none

        async def handle_checked_body(request: Request) -> Response:
            refuse_content_coding(request.headers)
            if is_json_media_type(request.headers.get("content-type", "")):  # the bodies FastAPI reads as JSON
                refuse_misread_json(await request.body())
            return await handle(request)

        return handle_checked_body


def refuse_content_coding(headers: Headers) -> None:
    """A 415 for a body sent with a content coding (gzip, br, ...): read as it came, it was either refused as not
    JSON, or, when it was not in fact compressed, accepted against what its header says."""
    codings = [coding.strip().lower() for value in headers.getlist("content-encoding") for coding in value.split(",")]
    sent = [coding for coding in codings if coding and coding != _NO_CODING]
    if sent:
        raise ApiError(
            415,
            f"The API takes uncompressed request bodies only (Content-Encoding: {', '.join(sent)}); send the body "
            "as plain JSON, without Content-Encoding.",
            headers={"Accept-Encoding": _NO_CODING},  # RFC 7694: the codings this server takes in requests
        )


@dataclass(frozen=True)
class _Misread:
    """Stands where `json.loads` would have silently changed the body: in place of the object that repeats `key`, or
    of the number that would have become 0."""

    problem: str
    key: str | None = None


def refuse_misread_json(body: bytes) -> None:
    """A `HokusaiValidationError` naming where a JSON body repeats a key or holds a non-zero number that a float reads
    as 0; nothing for a body that is not JSON at all, which FastAPI's own reading refuses as such."""
    misread: list[_Misread] = []

    def object_of(pairs: list[tuple[str, Any]]) -> object:
        built = dict(pairs)
        if len(built) == len(pairs):
            return built
        repeated = first_repeated(key for key, _ in pairs)
        misread.append(_Misread("is given more than once in the request body; give it once", repeated))
        return misread[-1]

    def float_of(literal: str) -> object:
        value = float(literal)
        if value == 0.0 and _is_nonzero_literal(literal):
            misread.append(_Misread(f"{FLOAT_UNDERFLOW} (sent as {literal})"))
            return misread[-1]
        return value

    try:
        parsed = json.loads(body, object_pairs_hook=object_of, parse_float=float_of)
    except (ValueError, RecursionError):
        return  # not JSON at all: FastAPI's own reading of it says why, as before
    if misread:
        path, first = next((path, node) for path, node in json_nodes(parsed) if isinstance(node, _Misread))
        field = json_path(path, first.key) if first.key is not None else path
        raise HokusaiValidationError(field or "body", first.problem)


def _is_nonzero_literal(literal: str) -> bool:
    """Whether a JSON number's digits, before its exponent, hold anything but zeros."""
    digits = literal.lower().partition("e")[0]
    return any(digit in "123456789" for digit in digits)
