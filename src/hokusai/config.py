"""Points the MLflow client at the Hokusai API, and reports which credential it will send and whether it works.

MLflow's client reads its settings from process-wide environment variables, so this module writes two of them,
and only when the user has not set them: ``MLFLOW_TRACKING_URI`` (``<api_url>/api/mlflow``) and
``MLFLOW_TRACKING_TOKEN`` (the Hokusai key). The server accepts the key both as a Bearer token and as the
password of HTTP Basic with any username, so a user's own ``MLFLOW_TRACKING_USERNAME``/``PASSWORD`` setup works
too; MLflow sends Basic whenever a username and a password exist, and the token otherwise.
"""

from __future__ import annotations

import configparser
import hmac
import logging
import os
import warnings
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from hokusai._client import BearerAuth, HokusaiClient, fetch_identity
from hokusai._credentials import (
    API_KEY_ENV,
    API_URL_ENV,
    DEFAULT_PORTS,
    Setting,
    check_key_destination,
    check_key_shape,
    lookup_api_key,
    lookup_api_url,
    refused_key_fix,
    remember_setup,
    require_api_key,
    same_origin,
    text_argument,
    without_userinfo,
)
from hokusai._flags import Mode, current_mode
from hokusai._local import create_local_store, local_tracking_uri
from hokusai._outbox import read_entries
from hokusai._paths import credentials_path, mlflow_credentials_path
from hokusai.errors import (
    HokusaiAPIError,
    HokusaiAuthError,
    HokusaiConfigurationError,
    HokusaiConnectionError,
    HokusaiError,
    HokusaiKeyMismatchWarning,
    HokusaiPermissionError,
)
from hokusai.validation import KEY_PREFIX, key_prefix

__all__ = ["MlflowAuthConfig", "get_mlflow_auth_status", "setup", "setup_mlflow_auth"]

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
TOKEN_ENV = "MLFLOW_TRACKING_TOKEN"
USERNAME_ENV = "MLFLOW_TRACKING_USERNAME"
PASSWORD_ENV = "MLFLOW_TRACKING_PASSWORD"
MLFLOW_PATH = "/api/mlflow"
MLFLOW_PROBE_PATH = "/api/2.0/mlflow/experiments/search"
logger = logging.getLogger(__name__)

# What this process wrote into os.environ, so a later call can tell its own values from the user's
# (and update them, e.g. for a different key) without ever overriding a value the user set.
_OWN_ENV: dict[str, str] = {}


@dataclass(frozen=True)
class MlflowAuthConfig:
    """What the MLflow client in this process will use; never holds a secret."""

    tracking_uri: str
    tracking_uri_source: str  # argument | env | hokusai-default
    credential_kind: str  # bearer | basic | none
    credential_source: str | None
    key_prefix: str | None
    mode: Mode
    env_set: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Credential:
    kind: str
    source: str | None
    username: str | None = field(default=None, repr=False)
    secret: str | None = field(default=None, repr=False)

    def as_httpx_auth(self) -> httpx.Auth | None:
        if self.kind == "basic" and self.username and self.secret:
            return httpx.BasicAuth(self.username, self.secret)
        return BearerAuth(self.secret) if self.kind == "bearer" and self.secret else None


@dataclass(frozen=True)
class _Plan:
    config: MlflowAuthConfig
    api_url: str
    tracking_uri: str = field(repr=False)  # config.tracking_uri has any user:password@ removed
    api_key: Setting | None
    credential: _Credential
    env: dict[str, str] = field(repr=False)
    # Why the key found is not used: it is not a key's shape (`check_key_shape`), or `hokusai login` saved it for
    # another server and it is withheld from this one (`check_key_destination`).
    unusable_key: HokusaiConfigurationError | None = None


def setup(
    api_key: str | None = None, *, api_url: str | None = None, tracking_uri: str | None = None, validate: bool = False
) -> MlflowAuthConfig:
    """Configure this process for Hokusai; call it once before using MLflow. See :func:`setup_mlflow_auth`.

    The key and URL given here are also what a later ``ModelRegistry()`` without arguments uses.
    """
    config = setup_mlflow_auth(validate, api_key=api_key, api_url=api_url, tracking_uri=tracking_uri)
    remember_setup(api_key=api_key, api_url=api_url)
    return config


def setup_mlflow_auth(
    validate: bool = False,
    *,
    api_key: str | None = None,
    api_url: str | None = None,
    tracking_uri: str | None = None,
    transport: httpx.BaseTransport | None = None,
) -> MlflowAuthConfig:
    """Point the MLflow client at the Hokusai API and give it the Hokusai key, unless the user configured either.

    - ``MLFLOW_TRACKING_URI`` is set to ``tracking_uri`` if given, else (when unset) to ``<api_url>/api/mlflow``,
      or in mock mode to the local SQLite store.
    - ``MLFLOW_TRACKING_TOKEN`` is set to the key only when the user has no MLflow credential of their own and
      the tracking URI is on the API's host: the key is never handed to another server.

    Args:
        validate: make one authenticated round trip to the API (``whoami``) and one to MLflow with the credential
            MLflow will send; skipped in mock mode.
        api_key, api_url: as for :class:`hokusai.ModelRegistry`.
        tracking_uri: an explicit MLflow tracking URI (counts as the user's own choice).
        transport: an httpx transport for the validation requests (tests).

    Raises:
        HokusaiConfigurationError: a flag, URL or key is invalid (a key not of a Hokusai key's shape, an argument
            given empty or not as text), or ``validate`` is set and there is no key.
        HokusaiAuthError, HokusaiPermissionError, HokusaiConnectionError: ``validate`` failed.
    """
    plan = _plan(api_key=api_key, api_url=api_url, tracking_uri=tracking_uri)
    if plan.unusable_key is not None:
        raise plan.unusable_key
    for name, value in plan.env.items():
        os.environ[name] = value
        _OWN_ENV[name] = value
    config = plan.config
    if config.mode == "mock":
        # Mock mode promises no network at all; MLflow's own usage telemetry would otherwise phone home.
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        if config.tracking_uri_source == "hokusai-default":
            create_local_store()  # before the caller's MLflow first opens it, which would pick the artifacts' place
    logger.info(
        "MLflow tracking URI %s (%s); MLflow will send %s credentials%s",
        config.tracking_uri,
        config.tracking_uri_source,
        config.credential_kind,
        f" from {config.credential_source}" if config.credential_source else "",
    )
    different = _different_key(plan) if config.mode != "mock" else None
    if different is not None:
        # Not an error: both keys work. But what MLflow logs and what the SDK registers then belong to two owners.
        warnings.warn(f"{different[0]}: {different[1]}.", HokusaiKeyMismatchWarning, stacklevel=3)
    if validate and config.mode != "mock":
        _validate(plan, transport)
    return config


def get_mlflow_auth_status(
    *,
    api_key: str | None = None,
    api_url: str | None = None,
    tracking_uri: str | None = None,
    transport: httpx.BaseTransport | None = None,
) -> dict[str, Any]:
    """Everything ``hokusai auth status`` shows: settings, their sources, whether they work, what to fix
    (``problems``) and what to know (``notes``, e.g. that only code calling ``setup()`` gives MLflow the key).

    Read-only: it changes no environment variable. In mock mode it makes no network call.
    """
    plan = _plan(api_key=api_key, api_url=api_url, tracking_uri=tracking_uri)
    config = plan.config
    status: dict[str, Any] = {
        "mode": config.mode,
        "api_url": plan.api_url,
        "tracking_uri": config.tracking_uri,
        "tracking_uri_source": config.tracking_uri_source,
        "credential": config.credential_kind,
        "credential_source": config.credential_source,
        "key_prefix": config.key_prefix,
        "reachable": False,
        "key_accepted": False,
        "mlflow_accepted": None,  # None: not asked (no key the API accepted, or MLflow is not over HTTP)
        "owner": None,
        "scopes": [],
        "expires_at": None,
        "outbox_pending": len(read_entries()),
        "problems": [],  # what to fix; `hokusai auth status` exits 1 when there is any
        "notes": [],  # true and worth knowing, but nothing is broken for code that uses the SDK
    }
    problems: list[dict[str, str]] = status["problems"]
    if status["outbox_pending"]:
        problems.append(
            _problem(f"{status['outbox_pending']} local registration(s) wait in the outbox", "run `hokusai sync`")
        )
    if config.mode == "mock":
        return status
    if plan.unusable_key is not None:
        problems.append(_problem(plan.unusable_key.user_message, str(plan.unusable_key.hint)))
    elif plan.api_key is None:
        problems.append(_problem("No Hokusai API key found", "run `hokusai login` or set HOKUSAI_API_KEY"))
    key = plan.api_key.value if plan.api_key else None
    refused_key_hint = refused_key_fix(plan.api_key) if plan.api_key else None
    with HokusaiClient(
        key, api_url=plan.api_url, max_retries=0, transport=transport, refused_key_hint=refused_key_hint
    ) as client:
        _check_api(client, plan, status)
        # MLflow is only worth asking once the API accepted the key: otherwise it would repeat the same refusal.
        if status["key_accepted"] and _is_http(plan.tracking_uri):
            _check_mlflow(client, plan, status)
    _check_same_key(plan, status)
    _check_stock_mlflow(plan, status)
    if config.mode == "optional" and not status["reachable"]:
        status["mode"] = "optional-fallback-active"
    if not same_origin(config.tracking_uri, plan.api_url):
        problems.append(_tracking_elsewhere(config.tracking_uri, plan.api_url))
    return status


def _tracking_elsewhere(tracking_uri: str, api_url: str) -> dict[str, str]:
    """The problem of an MLflow tracking URI outside the API's origin, told apart from a Hokusai MLflow path at another
    address (often the same server spelt differently: ``localhost`` and ``127.0.0.1``), whose fix is one spelling."""
    own = f"{api_url}{MLFLOW_PATH}"
    parts = urlsplit(tracking_uri)
    if parts.scheme in ("http", "https") and parts.path.rstrip("/").endswith(MLFLOW_PATH):
        return _problem(
            f"MLflow logs to {tracking_uri}, a Hokusai MLflow at another address than the API's ({api_url}): the SDK "
            "gives MLflow your key only for the API's own address, and registers only runs the API's MLflow holds",
            f"use one address for both: set {TRACKING_URI_ENV} to {own}, or {API_URL_ENV} to "
            f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path.rstrip('/').removesuffix(MLFLOW_PATH)}",
        )
    return _problem(
        f"MLflow logs to {tracking_uri}, not to the Hokusai MLflow: runs there cannot be registered",
        f"unset {TRACKING_URI_ENV} (or set it to {own})",
    )


def _plan(*, api_key: str | None, api_url: str | None, tracking_uri: str | None) -> _Plan:
    """Work out every setting and its source, without changing anything."""
    mode = current_mode()
    key = lookup_api_key(api_key)
    url = lookup_api_url(api_url)
    unusable_key = None
    if key is not None and mode != "mock":  # mock mode sends the key nowhere
        try:
            check_key_destination(check_key_shape(key), url)
        except HokusaiConfigurationError as exc:
            key, unusable_key = None, exc
    tracking = _tracking_uri(tracking_uri, url.value, mode)
    env: dict[str, str] = {}
    if tracking.source != "env":
        env[TRACKING_URI_ENV] = tracking.value
    credential = _user_credential()
    if credential is None and key is not None and mode != "mock" and same_origin(tracking.value, url.value):
        credential = _Credential("bearer", f"the Hokusai key ({key.source})", secret=key.value)
        env[TOKEN_ENV] = key.value
    credential = credential or _Credential("none", None)
    config = MlflowAuthConfig(
        tracking_uri=without_userinfo(tracking.value),
        tracking_uri_source=tracking.source,
        credential_kind=credential.kind,
        credential_source=credential.source,
        key_prefix=key_prefix(key.value) if key else None,
        mode=mode,
        env_set=tuple(env),
    )
    return _Plan(
        config=config,
        api_url=url.value,
        tracking_uri=tracking.value,
        api_key=key,
        credential=credential,
        env=env,
        unusable_key=unusable_key,
    )


def _tracking_uri(argument: str | None, api_url: str, mode: Mode) -> Setting:
    given = text_argument(argument, "tracking_uri")
    if given is not None:
        return Setting(given, "argument")
    from_env = _user_env(TRACKING_URI_ENV)
    if from_env:
        return Setting(from_env, "env")
    default = local_tracking_uri() if mode == "mock" else api_url + MLFLOW_PATH
    return Setting(default, "hokusai-default")


def _user_env(name: str) -> str | None:
    """An environment variable the user set (empty counts as unset); ``None`` for values this module wrote."""
    value = (os.environ.get(name) or "").strip()
    if not value or _OWN_ENV.get(name) == value:
        return None
    return value


def _user_credential() -> _Credential | None:
    """The MLflow credential the user configured, as MLflow picks it: Basic (username and password) beats Bearer."""
    file_username, file_password = _mlflow_file_credentials()
    env_username, env_password = _user_env(USERNAME_ENV), _user_env(PASSWORD_ENV)
    # MLflow takes each field from the environment first, then from ~/.mlflow/credentials.
    username, password = env_username or file_username, env_password or file_password
    if username and password:
        sources = {"env" if env_username else "file", "env" if env_password else "file"}
        source = {
            frozenset({"env"}): f"{USERNAME_ENV}/{PASSWORD_ENV}",
            frozenset({"file"}): str(mlflow_credentials_path()),
        }.get(frozenset(sources), f"{USERNAME_ENV}/{PASSWORD_ENV} and {mlflow_credentials_path()}")
        return _Credential("basic", source, username=username, secret=password)
    token = _user_env(TOKEN_ENV)
    return _Credential("bearer", TOKEN_ENV, secret=token) if token else None


def _mlflow_file_credentials() -> tuple[str | None, str | None]:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(mlflow_credentials_path(), encoding="utf-8")
    except configparser.Error:
        # MLflow itself would fail on this file; reporting "no file credential" lets the status show the rest.
        return None, None
    if not parser.has_section("mlflow"):
        return None, None
    section = parser["mlflow"]
    return (
        (section.get(USERNAME_ENV.lower()) or "").strip() or None,
        (section.get(PASSWORD_ENV.lower()) or "").strip() or None,
    )


def _validate(plan: _Plan, transport: httpx.BaseTransport | None) -> None:
    # The plan's key keeps its source, which the hint of a refusal names; without one, the error says what to do.
    key = plan.api_key or require_api_key()
    with HokusaiClient(
        key.value, api_url=plan.api_url, transport=transport, refused_key_hint=refused_key_fix(key)
    ) as client:
        fetch_identity(client)
        if _is_http(plan.tracking_uri):
            _probe_mlflow(client, plan)


def _probe_mlflow(client: HokusaiClient, plan: _Plan) -> None:
    """One MLflow call with exactly the credential the MLflow client will send."""
    client.request(
        "GET",
        plan.tracking_uri.rstrip("/") + MLFLOW_PROBE_PATH,
        params={"max_results": 1},
        auth=plan.credential.as_httpx_auth(),
    )


def _check_api(client: HokusaiClient, plan: _Plan, status: dict[str, Any]) -> None:
    problems: list[dict[str, str]] = status["problems"]
    try:
        identity = fetch_identity(client)
    except HokusaiConnectionError as exc:
        problems.append(
            _problem(exc.user_message, f"start the API (`hokusai server`) or fix HOKUSAI_API_URL ({plan.api_url})")
        )
        return
    except HokusaiAuthError as exc:
        status["reachable"] = True
        if plan.api_key is not None:
            problems.append(
                _problem(f"The API rejected the key {plan.config.key_prefix}…: {exc.user_message}", str(exc.hint))
            )
        return
    except HokusaiAPIError as exc:
        status["reachable"] = True
        problems.append(_problem(str(exc), str(exc.hint)))
        return
    status.update(
        reachable=True,
        key_accepted=True,
        owner=identity.get("owner"),
        scopes=list(identity.get("scopes") or []),
        expires_at=identity.get("expires_at"),
    )
    if identity.get("is_admin"):
        # Not broken, so a note: but MLflow's permissions do not apply to an admin, and its bare runs land in the
        # shared experiment 0 (the README's advice, which a shell exporting the admin key quietly ignores).
        status["notes"].append(
            _note(
                f"The key {plan.config.key_prefix}… is an admin key: in MLflow it acts as MLflow's admin, past every "
                "user's permissions, and its runs without an experiment land in the shared experiment 0",
                "use a key of your own for MLflow and registry work (`hokusai keys create --owner <you>`), and the "
                "admin key for administration only",
            )
        )


def _check_mlflow(client: HokusaiClient, plan: _Plan, status: dict[str, Any]) -> None:
    config = plan.config
    try:
        _probe_mlflow(client, plan)
    except HokusaiError as exc:
        sent = (
            f"{config.credential_kind} credentials from {config.credential_source}"
            if config.credential_source
            else "no credentials"
        )
        # Only an authentication or permission error is a refusal of what was sent; MLflow down is not.
        refused = isinstance(exc, HokusaiAuthError | HokusaiPermissionError)
        what = f"refused {sent}" if refused else "could not be used"
        status["problems"].append(
            _problem(f"MLflow at {config.tracking_uri} {what}: {exc.user_message}", _mlflow_fix(plan, exc))
        )
        status["mlflow_accepted"] = False
        return
    status["mlflow_accepted"] = True


def _mlflow_fix(plan: _Plan, exc: HokusaiError) -> str:
    """What to change when MLflow refuses its credential.

    The API has just accepted the key, so when MLflow was sent something else (a credential set for MLflow alone,
    which MLflow prefers to the key) that setting is the one to fix, not the key.
    """
    key = plan.api_key.value if plan.api_key else None
    source = plan.credential.source
    if isinstance(exc, HokusaiAuthError) and source and not _same_secret(plan.credential.secret, key):
        return f"MLflow sends the credential from {source}, not your Hokusai key: put the key there, or remove it"
    return exc.hint or "the message says what to do"


def _check_same_key(plan: _Plan, status: dict[str, Any]) -> None:
    """Report an MLflow credential of the user's own that is not the SDK's key (see `_different_key`)."""
    # A refusal was already reported with its own fix.
    if status["mlflow_accepted"] is False:
        return
    problem = _different_key(plan)
    if problem is not None:
        status["problems"].append(_problem(*problem))


def _different_key(plan: _Plan) -> tuple[str, str] | None:
    """What is wrong and how to fix it when MLflow will send the Hokusai MLflow another key than the SDK's.

    The server accepts any valid key on either path, so both work, but MLflow then acts as another owner than the
    SDK: runs logged through MLflow belong to that owner, and the SDK may be refused when it registers them (or, with
    an admin key in the SDK, registers them as the admin: a new user's easy mistake with two keys in their shell).
    """
    credential, key = plan.credential, plan.api_key
    if key is None or credential.secret is None or _same_secret(credential.secret, key.value):
        return None
    # A credential for another host is none of Hokusai's business.
    if not same_origin(plan.tracking_uri, plan.api_url):
        return None
    if credential.kind == "bearer":
        # The SDK's own key is changed where it came from: an argument wins over HOKUSAI_API_KEY, so naming the
        # variable would be a fix that changes nothing.
        sdk_side = {"env": f"set {API_KEY_ENV} to", "file": "log in (`hokusai login`) with"}.get(
            key.source, "pass the SDK"
        )
        fix = (
            f"use one key, your own, for both (an admin key is for administration, not MLflow work): set {TOKEN_ENV} "
            f"to the SDK's key, or unset it so hokusai.setup() sets it; or {sdk_side} {TOKEN_ENV}'s key"
        )
    else:
        fix = (
            f"make the password in {credential.source} the same key, or remove the username and password there "
            f"so hokusai.setup() sets {TOKEN_ENV}"
        )
    return (
        f"MLflow calls act as a different key ({_describe_secret(credential.secret)}, from {credential.source}) "
        f"than the SDK (prefix {plan.config.key_prefix}…, from {_key_source(key.source)})",
        fix,
    )


def _check_stock_mlflow(plan: _Plan, status: dict[str, Any]) -> None:
    """Say when MLflow gets the key only from ``hokusai.setup()``, which a plain ``mlflow`` process never calls.

    The rest of the status describes a process that called ``setup()``. The stock MLflow client elsewhere (a script
    that never imports hokusai, the ``mlflow`` CLI) reads only its own environment variables, and no Hokusai setting.
    """
    key = plan.api_key
    if key is None or TOKEN_ENV not in plan.env or _same_secret((os.environ.get(TOKEN_ENV) or "").strip(), key.value):
        return  # MLflow sends the user's own credential, or this process's environment already holds the key
    where = _key_source(key.source)
    where = where[:1].upper() + where[1:]  # it starts the sentence
    token = f"{TOKEN_ENV}=<your key, prefix {plan.config.key_prefix}…>"
    if plan.config.tracking_uri_source == "env":
        # The user pointed every MLflow client at Hokusai but gave it no credential: each is refused (401) now.
        status["problems"].append(
            _problem(
                f"{where} is used only by code that calls hokusai.setup() or ModelRegistry(): the stock MLflow "
                f"client in other processes sends no credential to {plan.config.tracking_uri} and is refused",
                f"export {token}",
            )
        )
        return
    # Without MLFLOW_TRACKING_URI the stock client logs locally and is refused nothing, and code that uses the SDK
    # works: failing the status here would fail every SDK-only user.
    status["notes"].append(
        _note(
            f"{where} and the tracking URI above are used only by code that calls hokusai.setup() or "
            "ModelRegistry(): the stock MLflow client in other processes (plain scripts, the `mlflow` CLI) "
            "logs to a local store, not to Hokusai",
            f"to use it there: export {TRACKING_URI_ENV}={plan.config.tracking_uri} {token}",
        )
    )


def _key_source(source: str) -> str:
    """Where the SDK's key came from, in words; a ``Setting.source`` alone ("file") does not say which file."""
    return {
        "file": f"the key saved in {credentials_path()}",
        "env": API_KEY_ENV,
        "argument": "the key passed as an argument",
        "setup()": "the key given to hokusai.setup()",
    }.get(source, f"the key from {source}")


def _same_secret(first: str | None, second: str | None) -> bool:
    """Compare two secrets in constant time, so the comparison leaks nothing about either through timing."""
    if first is None or second is None:
        return False
    return hmac.compare_digest(first.encode(), second.encode())


def _describe_secret(secret: str) -> str:
    """A secret MLflow sends, as it may be shown: a Hokusai key by its prefix, anything else not at all.

    The start of any other password may be most of it.
    """
    if secret.startswith(KEY_PREFIX):
        return f"prefix {key_prefix(secret)}…"
    return "not a Hokusai key"


def _problem(problem: str, fix: str) -> dict[str, str]:
    return {"problem": problem, "fix": fix}


def _note(note: str, fix: str) -> dict[str, str]:
    return {"note": note, "fix": fix}


def _is_http(uri: str) -> bool:
    return urlsplit(uri).scheme in DEFAULT_PORTS
