"""Contains the CLI's one way to call the API with the user's key: the SDK's client, so errors print the same way."""

from __future__ import annotations

from typing import Annotated, Any

import typer

__all__ = ["ApiUrlOption", "call_api"]

ApiUrlOption = Annotated[
    str | None,
    typer.Option(help="API address (default HOKUSAI_API_URL, then the one saved by `hokusai login`, then localhost)."),
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
