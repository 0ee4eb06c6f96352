"""Contains the lookup of the API key and URL (argument, `setup()`, environment, credentials file) and the file."""

from __future__ import annotations

import configparser
import io
import os
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from hokusai._paths import credentials_path, home_file
from hokusai._private_files import write_private_file
from hokusai.errors import HokusaiConfigurationError
from hokusai.validation import MALFORMED_KEY_MESSAGE, key_prefix, looks_like_key

__all__ = [
    "API_KEY_ENV",
    "API_URL_ENV",
    "DEFAULT_API_URL",
    "DEFAULT_PORTS",
    "Setting",
    "api_url_problem",
    "check_key_destination",
    "check_key_shape",
    "delete_credentials",
    "key_and_url",
    "lookup_api_key",
    "lookup_api_url",
    "read_credentials",
    "refused_key_fix",
    "remember_setup",
    "require_api_key",
    "resolve_api_url",
    "same_origin",
    "text_argument",
    "without_userinfo",
    "write_credentials",
]

API_KEY_ENV = "HOKUSAI_API_KEY"
API_URL_ENV = "HOKUSAI_API_URL"
DEFAULT_API_URL = "http://127.0.0.1:8000"  # where `hokusai server` listens by default
DEFAULT_PORTS = {"http": 80, "https": 443}
_SECTION = "default"
# What `hokusai.setup()` was given: this process's own choice, so a later `ModelRegistry()` uses it too.
_configured: dict[str, str] = {}
# A URL's `user:password@`, found without a URL parser: for a URL that Python's parser refuses.
_USERINFO_RE = re.compile(r"(?<=//)[^/?#]*@")


@dataclass(frozen=True)
class Setting:
    """A resolved value and where it came from: ``argument``, ``setup()``, ``env``, ``file``, ``default``, or
    ``login`` (a key given to ``hokusai login``)."""

    value: str = field(repr=False)
    source: str


def _clean(value: str | None) -> str | None:
    # Pasted keys often carry a newline; an empty string means "not set".
    if value is None:
        return None
    return value.strip() or None


def text_argument(value: object, name: str) -> str | None:
    """An optional text argument (`api_key`, `api_url`, `tracking_uri`) without the spaces around it; `None` when
    not given. Given empty, it is refused: falling back to the environment would ignore what the caller wrote."""
    if value is None:
        return None
    if not isinstance(value, str):
        decode = f": decode it first ({name}.decode())" if isinstance(value, bytes) else ""
        # The value itself is never shown: it may be a key.
        raise HokusaiConfigurationError(f"{name} must be a string (str), not {type(value).__name__}{decode}.")
    cleaned = _clean(value)
    if cleaned is None:
        raise HokusaiConfigurationError(
            f"{name} was given empty.", hint=f"pass a value, or leave {name} out (None) to use the configured one"
        )
    return cleaned


def _from_argument(value: object, name: str) -> Setting | None:
    cleaned = text_argument(value, name)
    return None if cleaned is None else Setting(cleaned, "argument")


def remember_setup(*, api_key: str | None, api_url: str | None) -> None:
    """Keep what ``hokusai.setup()`` was given for every later lookup in this process."""
    for name, value in (("api_key", api_key), ("api_url", api_url)):
        cleaned = _clean(value)
        if cleaned:
            _configured[name] = cleaned


def _from_setup(name: str) -> Setting | None:
    value = _configured.get(name)
    return Setting(value, "setup()") if value else None


def _from_env(name: str) -> Setting | None:
    cleaned = _clean(os.environ.get(name))
    return Setting(cleaned, "env") if cleaned else None


def _from_file(key: str) -> Setting | None:
    cleaned = _clean(read_credentials().get(key))
    return Setting(cleaned, "file") if cleaned else None


def read_credentials() -> dict[str, str]:
    """The ``[default]`` section of the credentials file; empty when the file does not exist."""
    path = credentials_path()
    # Keys are opaque strings: a '%' in one must not be read as interpolation.
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as exc:  # not INI, or not text at all
        raise HokusaiConfigurationError(
            f"The credentials file {path} is not valid INI ({exc.__class__.__name__}).",
            hint="fix or delete it, then run `hokusai login`",
        ) from exc
    return dict(parser[_SECTION]) if parser.has_section(_SECTION) else {}


def write_credentials(*, api_key: str, api_url: str | None = None) -> None:
    """Save the key (and URL) to the credentials file, readable by the owner only."""
    parser = configparser.ConfigParser(interpolation=None)
    parser[_SECTION] = {"api_key": api_key} | ({"api_url": api_url} if api_url else {})
    buffer = io.StringIO()
    parser.write(buffer)
    path = credentials_path()
    with home_file(path, "save the login to"):
        write_private_file(path, buffer.getvalue())


def delete_credentials() -> bool:
    """Remove the credentials file; ``False`` when there was none."""
    path = credentials_path()
    try:
        with home_file(path, "remove"):
            path.unlink()
    except FileNotFoundError:
        return False
    return True


def lookup_api_key(api_key: str | None = None) -> Setting | None:
    """Find the API key, first match wins:

    1. the ``api_key`` argument;
    2. the key given to ``hokusai.setup()`` earlier in this process;
    3. the ``HOKUSAI_API_KEY`` environment variable;
    4. ``api_key`` in the ``[default]`` section of ``$HOKUSAI_HOME/credentials`` (written by ``hokusai login``).

    Empty values in the environment or the file count as missing; an empty or non-text argument is refused.
    """
    return (
        _from_argument(api_key, "api_key") or _from_setup("api_key") or _from_env(API_KEY_ENV) or _from_file("api_key")
    )


def refused_key_fix(key: Setting) -> str:
    """What to do when the API refuses `key`, for the place it came from: logging in again cannot replace a key
    that HOKUSAI_API_KEY or the program itself supplies."""
    return _key_fix(key, f"the key {key_prefix(key.value)}…")


def _key_fix(key: Setting, shown: str) -> str:
    """How to replace `key` where it came from; `shown` names it (its prefix, only for a key of the right shape)."""
    if key.source == "env":
        return f"{shown} is {API_KEY_ENV}'s: set it to a valid key, or unset it to use the saved login"
    if key.source == "file":
        return f"{shown} is the saved login's ({credentials_path()}): run `hokusai login` with a valid key"
    if key.source == "login":
        return f"{shown} was given to `hokusai login`, which saved nothing: run it again with the whole key"
    given = "was given to hokusai.setup()" if key.source == "setup()" else "was passed as an argument"
    return f"{shown} {given}: pass a valid key"


def check_key_shape(key: Setting) -> Setting:
    """`key`, when it has the shape of a Hokusai key (the server's rule, `looks_like_key`); else the server's
    refusal, made here. Sent, a key holding a line break or a NUL broke the request itself, in errors that quoted it
    whole; and any other key of the wrong shape only costs a round trip to be refused. The key is never shown: not
    even its prefix, which of a mistyped secret may be most of it."""
    if not looks_like_key(key.value):
        raise HokusaiConfigurationError(MALFORMED_KEY_MESSAGE, hint=_key_fix(key, "the key"))
    return key


def require_api_key(api_key: str | None = None) -> Setting:
    """The API key to send (`lookup_api_key`), of the right shape (`check_key_shape`)."""
    found = lookup_api_key(api_key)
    if found is None:
        raise HokusaiConfigurationError(
            "No Hokusai API key provided.",
            hint=f"run `hokusai login` or set {API_KEY_ENV}; in Python, `setup(api_key=...)` also works",
        )
    return check_key_shape(found)


def lookup_api_url(api_url: str | None = None) -> Setting:
    """Find the API URL: the argument, ``setup()``'s, ``HOKUSAI_API_URL``, the credentials file's, else localhost."""
    found = (
        _from_argument(api_url, "api_url")
        or _from_setup("api_url")
        or _from_env(API_URL_ENV)
        or _from_file("api_url")
        or Setting(DEFAULT_API_URL, "default")
    )
    problem = api_url_problem(found.value)
    if problem is not None:
        fix = f"give the API root, e.g. {DEFAULT_API_URL}"
        if found.source != "argument":
            fix = f"set {API_URL_ENV} to the API root, e.g. {DEFAULT_API_URL}"
        raise HokusaiConfigurationError(
            f"The API URL {without_userinfo(found.value)!r} (from {found.source}) {problem}.", hint=fix
        )
    return Setting(found.value.rstrip("/"), found.source)


def api_url_problem(url: str) -> str | None:
    """What makes `url` unusable as the API root, as the end of a sentence about it; `None` when nothing does."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- parsed only when read
    except ValueError as exc:  # an unclosed `[`, a port past 65535: else a traceback wherever the URL is first read
        return f"is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return "is not an http(s) URL"
    if "@" in parts.netloc:
        # The key is the API's one credential, and a URL's user part is written wherever the URL is (httpx logs it).
        return (
            "carries a user name or password, which the API does not take and which would be written to logs (the "
            "key goes in HOKUSAI_API_KEY or `hokusai login`)"
        )
    if not parts.hostname:
        return "names no host"
    if parts.query or parts.fragment:
        return "has a query or fragment; the API's paths are added to it"
    return None


def resolve_api_url(api_url: str | None = None) -> str:
    return lookup_api_url(api_url).value


def key_and_url(api_key: str | None = None, api_url: str | None = None) -> tuple[Setting, Setting]:
    """The API key and URL to call the API with: as `require_api_key` and `lookup_api_url` find them, checked by
    `check_key_destination`."""
    key, url = require_api_key(api_key), lookup_api_url(api_url)
    check_key_destination(key, url)
    return key, url


def check_key_destination(key: Setting, url: Setting) -> None:
    """Refuse to send the key saved by `hokusai login` to a server other than the one it was saved for.

    A key from the credentials file goes, unasked, to whatever URL an option or the environment names: a typo, or a
    URL copied from somewhere, would hand it over (in clear, over http). A key given explicitly goes where it is told.
    """
    if key.source != "file" or url.source == "file":
        return
    saved_for = _clean(read_credentials().get("api_url"))
    if saved_for is None or same_origin(saved_for, url.value):  # a file written without a URL names no server
        return
    raise HokusaiConfigurationError(
        f"The key saved by `hokusai login` is for {without_userinfo(saved_for)}; it is not sent to "
        f"{without_userinfo(url.value)} (from {url.source}).",
        hint=f"run `hokusai login --api-url {without_userinfo(url.value)}` to use a key of that server, or give "
        f"the key explicitly ({API_KEY_ENV})",
    )


def same_origin(first: str, second: str) -> bool:
    """Whether two http(s) URLs name the same scheme, host and port."""

    def origin(url: str) -> tuple[str, str | None, int | None]:
        parts = urlsplit(url)
        return parts.scheme, parts.hostname, parts.port or DEFAULT_PORTS.get(parts.scheme)

    try:
        return urlsplit(first).scheme in DEFAULT_PORTS and origin(first) == origin(second)
    except ValueError:  # a URL no request could go to (a port past 65535, an unclosed `[`) is the same as none
        return False


def without_userinfo(uri: str) -> str:
    """The URI without ``user:password@``, so it can be logged and shown."""
    try:
        parts = urlsplit(uri)
    except ValueError:  # not a URL Python can read (`api_url_problem` says why), but it may still hold a password
        return _USERINFO_RE.sub("***@", uri, count=1)
    if parts.scheme not in DEFAULT_PORTS or "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))
