"""`hokusai keys`: manage API keys through a running server (with your key) or `--offline` against its database."""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple
from urllib.parse import quote

import typer
from rich.table import Table
from rich.text import Text

from hokusai._printable import printable
from hokusai.cli._api import ApiUrlOption, call_api
from hokusai.cli._errors import options_for_fields
from hokusai.cli._output import JsonOption, console, print_json_lines
from hokusai.validation import KEY_MAX_LIFETIME_DAYS, KEY_PREFIX, OFFLINE_ACTOR, looks_like_key_id

if TYPE_CHECKING:  # the server's modules load only for --offline: the SDK alone can create keys remotely
    from hokusai.server.audit import AuditLog
    from hokusai.server.keys import KeyStore
    from hokusai.server.models import ApiKey
    from hokusai.server.settings import Settings

keys_app = typer.Typer(help="Create, list, revoke and rotate API keys.", no_args_is_help=True)

OfflineOption = Annotated[
    bool,
    typer.Option(
        "--offline", help="Use the server's database directly, no API (HOKUSAI_DATA_DIR / HOKUSAI_DATABASE_URL)."
    ),
]
KEYS_PATH = "/api/v1/keys"


def _checked_key_id(key_id: str) -> str:
    """`key_id` if the server could have made it. Any other names no key: sent, it was a 404 whose hint blamed the
    API URL (`a/b` even reached another endpoint), and offline, a NUL in it is an error of PostgreSQL's."""
    if looks_like_key_id(key_id):
        return key_id
    if KEY_PREFIX in key_id:  # the key itself, which an error message must not repeat
        raise typer.BadParameter(
            "this is an API key, not a key id (it is not shown here): give the key's id, the `id` column of "
            "`hokusai keys list`"
        )
    raise typer.BadParameter(
        f"{key_id!r} is not a key id: ids are 'key_' and 16 hex digits, the `id` column of `hokusai keys list`"
    )


KeyIdArgument = Annotated[
    str, typer.Argument(help="The key's id: the `id` column of `hokusai keys list`.", callback=_checked_key_id)
]


class _Offline(NamedTuple):
    keys: KeyStore
    audit: AuditLog
    admin_owner: str  # the settings' (environment or .env), for a key created without --owner

    def record(self, action: str, key_id: str, **detail: str) -> None:
        """Record a key change made with --offline, as the API records its own (`key.create`, `key.revoke`, ...)."""
        try:
            os_user = getpass.getuser()
        except (OSError, KeyError):  # no login name in some containers
            os_user = "unknown"
        detail = {"os_user": os_user, **detail}
        self.audit.record(actor=OFFLINE_ACTOR, action=action, outcome="ok", target=key_id, detail=detail)


@contextmanager
def _offline_store() -> Iterator[_Offline]:
    from hokusai.server.audit import AuditLog
    from hokusai.server.db import Database
    from hokusai.server.keys import KeyStore
    from hokusai.server.secrets import load_or_create_secrets
    from hokusai.server.settings import load_settings

    settings = load_settings()
    _refuse_a_stray_data_dir(settings)
    with _database_reached(settings.resolved_database_url):
        database = Database(settings.resolved_database_url)
        try:
            pepper = load_or_create_secrets(settings).key_pepper
            store = KeyStore(database, pepper, cache_ttl=settings.key_cache_ttl_seconds)
            yield _Offline(store, AuditLog(database), settings.admin_owner)
        finally:
            database.close()


@contextmanager
def _database_reached(url: str) -> Iterator[None]:
    """A database that cannot be reached (down, refusing, a wrong password or name), when opened or used, as one
    paragraph rather than SQLAlchemy's traceback: its URL without the password, and the driver's first line, as the
    server logs it (`database_error_reason`)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError

    from hokusai.errors import HokusaiConnectionError
    from hokusai.server.errors import database_error_reason

    try:
        yield
    except OperationalError as exc:
        shown = make_url(url).render_as_string(hide_password=True)
        raise HokusaiConnectionError(
            f"The Hokusai database {shown} could not be reached ({database_error_reason(exc)}).",
            hint="start the database, or point HOKUSAI_DATABASE_URL (or HOKUSAI_DATA_DIR) at the server's: --offline "
            "works on the server's database directly",
        ) from exc


def _refuse_a_stray_data_dir(settings: Settings) -> None:
    """Refuse to work on platform data that is not there, unless its place was named on purpose.

    Run from another directory, the default `./.hokusai` is a new, empty one: the key made there would be peppered
    with a fresh secret in a database no server reads, and look fine until it is used. Naming the directory
    (HOKUSAI_DATA_DIR) or the database (HOKUSAI_DATABASE_URL) is how a new platform is prepared before its first
    start.
    """
    from hokusai.errors import HokusaiConfigurationError
    from hokusai.server.secrets import SECRETS_FILE

    named = {"data_dir", "database_url", "key_pepper"} & settings.model_fields_set
    if named or (settings.resolved_data_dir / SECRETS_FILE).exists():
        return
    raise HokusaiConfigurationError(
        f"No Hokusai platform here: {settings.resolved_data_dir} holds no platform data.",
        hint="run this in the directory where `hokusai server` (make run) keeps its .hokusai, or set HOKUSAI_DATA_DIR "
        "to the server's data directory",
    )


def _offline_row(record: ApiKey) -> dict[str, Any]:
    from hokusai.server.schemas import KeyInfo

    return KeyInfo.of(record).model_dump(mode="json")


def _key_status(row: dict[str, Any]) -> str:
    if row["revoked_at"]:
        return "revoked"
    # The API sends times in ISO 8601 with their offset (UTC); a key is refused from its expiry on.
    expires_at = row.get("expires_at")
    if expires_at and datetime.fromisoformat(str(expires_at)) <= datetime.now(UTC):
        return "expired"
    return "active"


# Every column, and the ones that still fit an 80-column terminal; the full table needs about 124 columns.
_COLUMNS = ("owner", "name", "scopes", "prefix", "status", "created", "expires", "last used")
_NARROW_COLUMNS = ("owner", "scopes", "status", "last used")
_FULL_TABLE_WIDTH = 124


def _print_keys(rows: Sequence[dict[str, Any]]) -> None:
    out = console()  # names and owners are user text: never read as markup
    columns = _COLUMNS if out.width >= _FULL_TABLE_WIDTH else _NARROW_COLUMNS
    table = Table()
    # The id is what `revoke` and `rotate` take: kept on one line, so it can be copied in a narrow terminal. The rest
    # folds, never truncates.
    table.add_column("id", no_wrap=True, min_width=max((len(row["id"]) for row in rows), default=2))
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        cells = {
            "owner": row["owner"],
            "name": printable(row["name"]),  # keys made before names were checked may hold control characters
            "scopes": ",".join(row["scopes"]),
            "prefix": row["prefix"] + "…",
            "status": _key_status(row),
            "created": str(row["created_at"] or "-")[:10],
            "expires": str(row["expires_at"] or "-")[:10],
            "last used": str(row["last_used_at"] or "-")[:10],
        }
        table.add_row(row["id"], *(cells[column] for column in columns))
    out.print(table)
    if columns is _NARROW_COLUMNS:
        out.print(f"(name, prefix, created and expires need a terminal at least {_FULL_TABLE_WIDTH} columns wide)")


def _print_created(row: dict[str, Any], quiet: bool) -> None:
    if quiet:
        typer.echo(row["key"])
        return
    out = console()
    scopes = ",".join(row["scopes"])
    out.print(
        Text.assemble(
            "Created key ",
            (row["id"], "bold"),
            f" ({printable(row['name'])}) for ",
            (row["owner"], "bold"),
            f" with scopes {scopes}.",
        )
    )
    if row.get("expires_at"):
        out.print(f"It expires on {str(row['expires_at'])[:10]}.")
    out.print("The key is shown once; store it now:")
    typer.echo(row["key"])


@keys_app.command("create")
def create_key(
    owner: Annotated[str | None, typer.Option(help="Account the key belongs to (admins; default: yourself).")] = None,
    scopes: Annotated[str, typer.Option(help="Comma-separated: read, write, admin.")] = "read,write",
    name: Annotated[str, typer.Option(help="A label for the key.")] = "default",
    expires_in_days: Annotated[
        int | None, typer.Option(min=1, max=KEY_MAX_LIFETIME_DAYS, help="Expire after this many days.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print the key alone, for scripts.")] = False,
    offline: OfflineOption = False,
    api_url: ApiUrlOption = None,
) -> None:
    """Create a key; the full key is printed once.

    Example: `hokusai keys create --owner alice --scopes read,write --expires-in-days 90`.
    """
    # Only --offline needs the server's modules (and the [server] extra): the SDK alone can create keys remotely.
    from hokusai.validation import parse_scopes, serialize_scopes, validate_key_name, validate_owner

    try:
        parsed = parse_scopes(scopes)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--scopes'") from exc
    with options_for_fields(
        {"owner": "--owner", "name": "--name", "scopes": "--scopes", "expires_in_days": "--expires-in-days"}
    ):
        validate_key_name(name)
        if offline:
            from hokusai.server.keys import expiry_from_days

            with _offline_store() as store:
                account = validate_owner(owner) if owner is not None else store.admin_owner
                expires_at = expiry_from_days(expires_in_days)
                issued = store.keys.create(owner=account, name=name, scopes=parsed, expires_at=expires_at)
                store.record("key.create", issued.record.id)
                row = {**_offline_row(issued.record), "key": issued.secret}
        else:
            if owner is not None:
                validate_owner(owner)  # here rather than by the server: the error names the option
            scope_list = serialize_scopes(parsed).split(",")
            body = {"name": name, "owner": owner, "scopes": scope_list, "expires_in_days": expires_in_days}
            row = call_api("POST", KEYS_PATH, api_url, json=body)
    _print_created(row, quiet)


@keys_app.command("list")
def list_keys(
    owner: Annotated[str | None, typer.Option(help="Only this owner's keys (admins; default: your own).")] = None,
    every: Annotated[bool, typer.Option("--all", help="Every account's keys (admins, or --offline).")] = False,
    offline: OfflineOption = False,
    as_json: JsonOption = False,
    api_url: ApiUrlOption = None,
) -> None:
    """List keys (never the keys themselves: only their prefixes).

    `last used` is written every HOKUSAI_LAST_USED_FLUSH_SECONDS (30 s by default).

    Example: `hokusai keys list --all` (admins), `hokusai keys list` (your own) or `hokusai keys list --json | jq`.
    """
    if owner is not None and every:
        console(stderr=True).print("Error: --owner and --all are alternatives; pass one.")
        raise typer.Exit(2)
    if offline:
        # The database has no "you": without --owner, offline lists every key.
        with _offline_store() as store:
            rows = [_offline_row(record) for record in store.keys.list(owner=owner)]
    else:
        params = {"owner": owner} if owner else ({"all": "true"} if every else {})
        rows = call_api("GET", KEYS_PATH, api_url, params=params)["keys"]
    if as_json:
        print_json_lines(rows)
    else:
        _print_keys(rows)


@keys_app.command("revoke")
def revoke_key(key_id: KeyIdArgument, offline: OfflineOption = False, api_url: ApiUrlOption = None) -> None:
    """Revoke a key by id (the `id` column of `hokusai keys list`).

    Example: `hokusai keys revoke key_0123456789abcdef`.
    """
    if offline:
        from hokusai.server.keys import KeyAlreadyRevoked

        with _offline_store() as store:
            try:
                revoked = store.keys.revoke(key_id)
            except KeyAlreadyRevoked as exc:
                console(stderr=True).print(str(exc))
                raise typer.Exit(1) from exc
            if revoked is None:
                console(stderr=True).print(f"No key with id {key_id}.")
                raise typer.Exit(1)
            store.record("key.revoke", key_id)
        console().print(f"Revoked {key_id}.")
        return
    revoking_own_key = _is_key_in_use(key_id, api_url)
    call_api("DELETE", f"{KEYS_PATH}/{quote(key_id, safe='')}", api_url)
    console().print(f"Revoked {key_id}.")
    if revoking_own_key:
        _say_own_key_revoked()


@keys_app.command("rotate")
def rotate_key(
    key_id: KeyIdArgument,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print the new key alone.")] = False,
    offline: OfflineOption = False,
    api_url: ApiUrlOption = None,
) -> None:
    """Replace a key: a new key with the same owner and scopes; the old one is revoked.

    Example: `hokusai keys rotate key_0123456789abcdef --quiet > new-key.txt`.
    """
    if offline:
        from hokusai.server.keys import KeyAlreadyRevoked, KeyExpired

        with _offline_store() as store:
            try:
                issued = store.keys.rotate(key_id)
            except (KeyExpired, KeyAlreadyRevoked) as exc:
                console(stderr=True).print(str(exc))
                raise typer.Exit(1) from exc
            if issued is None:
                console(stderr=True).print(f"No key with id {key_id}.")
                raise typer.Exit(1)
            store.record("key.rotate", key_id, replaced_by=issued.record.id)
            row = {**_offline_row(issued.record), "key": issued.secret}
        _print_created(row, quiet)
        return
    rotating_own_key = _is_key_in_use(key_id, api_url)
    row = call_api("POST", f"{KEYS_PATH}/{quote(key_id, safe='')}/rotate", api_url)
    _print_created(row, quiet)
    if not quiet:
        console().print(f"Revoked {key_id}: it no longer works.")
    if rotating_own_key:
        _follow_own_rotation(row["key"])


def _follow_own_rotation(new_key: str) -> None:
    """The key this command used is now revoked: put its successor where the old one was found, or say where to."""
    from hokusai._credentials import API_KEY_ENV, read_credentials, require_api_key, write_credentials

    used = require_api_key()
    err = console(stderr=True)
    if used.source == "file":
        write_credentials(api_key=new_key, api_url=read_credentials().get("api_url"))
        err.print("The rotated key was your saved login; the new key replaces it there (`hokusai login` file).")
    else:
        err.print(
            f"The rotated key was the one in {API_KEY_ENV}, which now holds a revoked key: export the new key there."
        )
    _say_mlflow_holds(used.value, "export the new key there too")


def _say_mlflow_holds(old_key: str, fix: str) -> None:
    """The stock MLflow client reads the key from its own variables, which no command can change for the shell."""
    from hokusai.config import PASSWORD_ENV, TOKEN_ENV

    holding = [name for name in (TOKEN_ENV, PASSWORD_ENV) if (os.environ.get(name) or "").strip() == old_key]
    if holding:
        verb = "holds" if len(holding) == 1 else "hold"
        console(stderr=True).print(f"{' and '.join(holding)} still {verb} the old key for the MLflow client: {fix}.")


def _is_key_in_use(key_id: str, api_url: str | None) -> bool:
    """Whether `key_id` is the key this command calls the API with (asked before it is revoked or rotated)."""
    from hokusai._client import WHOAMI_PATH

    return bool(call_api("GET", WHOAMI_PATH, api_url)["key_id"] == key_id)


def _say_own_key_revoked() -> None:
    """The key this command used is now revoked: every later command with it would be a 401, so say so now."""
    from hokusai._credentials import API_KEY_ENV, require_api_key

    used = require_api_key()
    where = "your saved login" if used.source == "file" else f"the one in {API_KEY_ENV}"
    console(stderr=True).print(
        f"That was the key this command used ({where}); it no longer works: `hokusai login` with another key."
    )
    _say_mlflow_holds(used.value, "put another key of yours there")


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
