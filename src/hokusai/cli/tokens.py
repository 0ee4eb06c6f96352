"""Contains ``hokusai tokens show | transfer | release``: who holds a token, and the admins' operations on it."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from hokusai._registry import TOKENS_PATH, ModelRegistry
from hokusai.cli._api import ApiUrlOption, call_api
from hokusai.cli._errors import options_for_fields
from hokusai.cli._output import JsonOption, console, key_value_table, print_json_lines, shown
from hokusai.validation import normalize_token_id, validate_owner

__all__ = ["register", "tokens_app"]

TokenArgument = Annotated[str, typer.Argument(help="The token id (case-insensitive).")]

tokens_app = typer.Typer(help="Look up tokens; admins transfer and release them.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the ``tokens`` group to the root app."""
    app.add_typer(tokens_app, name="tokens")


def _token_path(token_id: str) -> str:
    # Checked before it goes into the URL: the server would refuse a bad id too, but not before a path is built.
    with options_for_fields({"token_id": "TOKEN_ID"}):
        return f"{TOKENS_PATH}/{normalize_token_id(token_id)}"


def _print_token(row: dict[str, Any]) -> None:
    rows = [("model", row["model_name"]), ("owner", row["owner"]), ("claimed", row["created_at"])]
    if row.get("model_carries_token") is False:
        rows.append(
            (
                "note",
                "no version of this model carries the token any more (deleted or renamed straight on MLflow); "
                "registering the token on another model moves it there",
            )
        )
    console().print(key_value_table(rows, title=f"Token {row['token_id']}"))


@tokens_app.command("show")
def show(token_id: TokenArgument, as_json: JsonOption = False, api_url: ApiUrlOption = None) -> None:
    """Show the model that holds a token; its owner is shown to that owner and to admins.

    Example: `hokusai tokens show CHURN`; for scripts, `hokusai tokens show CHURN --json | jq -r .model_name`.
    """
    with options_for_fields({"token_id": "TOKEN_ID"}), ModelRegistry(api_url=api_url) as registry:
        row = registry.get_token(token_id).model_dump(mode="json")
    if as_json:
        print_json_lines([row])
        return
    _print_token(row)


@tokens_app.command("transfer")
def transfer(
    token_id: TokenArgument,
    to: Annotated[str, typer.Option("--to", help="The account that receives the token.")],
    model: Annotated[
        str | None, typer.Option("--model", help="Move the token to this registered model as well.")
    ] = None,
    api_url: ApiUrlOption = None,
) -> None:
    """Admins: give a token to another account, which gets MANAGE on the token's registered model.

    The previous owner's MANAGE on that model is withdrawn (they keep what every user may do, READ by default).
    Example: `hokusai tokens transfer CHURN --to bob`.
    """
    with options_for_fields({"owner": "--to"}):
        body = {"new_owner": validate_owner(to), "model_name": model}
    row = call_api("POST", _token_path(token_id) + "/transfer", api_url, json=body)
    console().print(shown(f"Token {row['token_id']} now belongs to {row['owner']} (model {row['model_name']})."))


@tokens_app.command("release")
def release(
    token_id: TokenArgument,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    api_url: ApiUrlOption = None,
) -> None:
    """Admins: release a token so that anyone may claim it; registered versions keep their tags.

    Example: `hokusai tokens release CHURN --yes`.
    """
    path = _token_path(token_id)
    if not yes:
        typer.confirm(f"Release token {normalize_token_id(token_id)}? Anyone may then claim it.", abort=True)
    row = call_api("DELETE", path, api_url)
    console().print(shown(f"Released token {row['token_id']}; it was held by model {row['model_name']}."))
