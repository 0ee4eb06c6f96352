"""Contains the CLI's one way to call the API with the user's key: the SDK's client, so errors print the same way."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from hokusai._credentials import api_url_problem, without_userinfo

__all__ = ["ApiUrlOption", "call_api", "checked_api_url"]


def checked_api_url(value: str | None) -> str | None:
    """`--api-url` by the SDK's rule for API URLs, a usage error naming the option when it breaks it. Given empty, it
    is refused too: an empty option choosing the configured URL would ignore what was typed."""
    if value is None:
        return None
    if not value.strip():
        raise typer.BadParameter("must not be empty; leave the option out to use the configured URL")
    problem = api_url_problem(value.strip())
    if problem is not None:
        raise typer.BadParameter(f"{without_userinfo(value)!r} {problem}")
    return value


ApiUrlOption = Annotated[
    str | None,
    typer.Option(
        help="API address (default HOKUSAI_API_URL, then the one saved by `hokusai login`, then localhost).",
        callback=checked_api_url,
    ),
]


def call_api(method: str, path: str, api_url: str | None, **kwargs: Any) -> dict[str, Any]:
    """Call `path` of a running server with your key (the SDK's lookup: HOKUSAI_API_KEY, then `hokusai login`).

    Errors are the SDK's, so the CLI prints them like every other command: status, code, layer, request id, hint.
    """
    from hokusai._client import HokusaiClient, json_body
    from hokusai._credentials import key_and_url, refused_key_fix
    from hokusai._flags import current_mode, mock_mode_error

    if current_mode() == "mock":
        raise mock_mode_error()
    key, url = key_and_url(api_url=api_url)
    with HokusaiClient(key.value, api_url=url.value, refused_key_hint=refused_key_fix(key)) as client:
        return dict(json_body(client.request(method, path, **kwargs)))
