"""Contains :class:`ModelRegistry`, the SDK's entry point for registering and reading tokenized models."""

from __future__ import annotations

import logging
import numbers
import uuid
import warnings
from collections.abc import Mapping
from decimal import Decimal
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from hokusai._client import (
    IDEMPOTENCY_HEADER,
    HokusaiClient,
    fetch_identity,
    json_body,
    unexpected_response,
)
from hokusai._credentials import key_and_url, refused_key_fix
from hokusai._flags import Mode, current_mode, mock_mode_error
from hokusai._local import LocalRegistry
from hokusai._outbox import append_entry, new_entry
from hokusai.config import setup_mlflow_auth
from hokusai.errors import (
    HokusaiAPIError,
    HokusaiConnectionError,
    HokusaiRegistrationWarning,
    HokusaiValidationError,
)
from hokusai.models import BaselineEntry, RegistrationRequest, TokenClaim, TokenizedModel
from hokusai.validation import (
    DEFAULT_PAGE_SIZE,
    LATEST_VERSION,
    normalize_model_type,
    normalize_token_id,
    run_model_uri,
    uri_scheme,
    validate_metadata,
    validate_model_name,
    validate_owner,
    validate_registration,
    validate_run_id,
    validate_version,
)

__all__ = ["ModelRegistry"]

TOKENIZED_PATH = "/api/v1/models/tokenized"
BASELINE_PATH = "/api/v1/models/baseline"
TOKENS_PATH = "/api/v1/tokens"

logger = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=BaseModel)
RegisteredT = TypeVar("RegisteredT", TokenizedModel, BaselineEntry)


# How a result registered through the local fallback (HOKUSAI_OPTIONAL_MLFLOW) starts its first warning.
LOCAL_ONLY_NOTE = "registered in the local store only"


class ModelRegistry:
    """Register tokenized models with the Hokusai API (or, in mock mode, a local MLflow store).

    Usage::

        with ModelRegistry() as registry:
            model = registry.register_tokenized_model(
                model_uri=f"runs:/{run_id}/model", model_name="churn", token_id="CHURN",
                metric_name="accuracy", baseline_value=0.91,
            )

    The constructor makes no network call. It resolves the key and URL (argument, environment, then the file
    written by ``hokusai login``) and calls :func:`hokusai.config.setup_mlflow_auth`, so MLflow in this process
    logs to the platform with the same key.

    Modes, from environment flags: ``HOKUSAI_MOCK_MODE=true`` answers everything from a local MLflow store
    under ``$HOKUSAI_HOME/mock`` with no network at all; ``HOKUSAI_OPTIONAL_MLFLOW=true`` registers locally and
    queues the registration for ``hokusai sync`` when the API is unreachable or failing (5xx), never on 401/403.

    Raises:
        HokusaiConfigurationError: no API key outside mock mode, a key not of a Hokusai key's shape, an argument
            given empty or not as text, or an invalid flag or URL.
    """

    def __init__(
        self,
        api_key: str | None = None,
        api_url: str | None = None,
        tracking_uri: str | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.mode: Mode = current_mode()
        self._client: HokusaiClient | None = None
        if self.mode != "mock":
            key, url = key_and_url(api_key, api_url)  # fail before touching anything
            self._client = HokusaiClient(
                key.value, api_url=url.value, transport=transport, refused_key_hint=refused_key_fix(key)
            )
        self.mlflow = setup_mlflow_auth(api_key=api_key, api_url=api_url, tracking_uri=tracking_uri)
        self._local: LocalRegistry | None = None
        self._warned_fallback = False

    @property
    def key_prefix(self) -> str | None:
        """The displayable start of the key this registry sends (``hk_live_AbCd``); ``None`` in mock mode."""
        return self._client.key_prefix if self._client is not None else None

    @property
    def local(self) -> LocalRegistry:
        """The local backend (created on first use; mock mode and the offline fallback share it)."""
        if self._local is None:
            self._local = LocalRegistry()
        return self._local

    def register_tokenized_model(
        self,
        model_uri: str,
        model_name: str,
        token_id: str,
        metric_name: str,
        baseline_value: float | Decimal,
        *,
        tags: Mapping[str, object] | None = None,
        description: str | None = None,
        eval_spec: str | None = None,
        scorer_ref: str | None = None,
        primary_metric: str | None = None,
        benchmark_spec_id: str | None = None,
        strict: bool = False,
    ) -> TokenizedModel:
        """Register ``model_uri`` as a version of ``model_name``, tied to ``token_id`` and a benchmark baseline.

        Input is checked locally first with the server's own rules. Registering the same token, model, source,
        metric and baseline again returns the existing version (``created`` is ``False``). A token belongs to one
        model only. The source's run (``runs:/<run id>/<path>``; the run a ``models:/<model id>`` was logged in; the
        run of a ``models:/<name>/<version>``, ``/latest`` or ``@<alias>``) is read and its ``metric_name`` compared
        with ``baseline_value``: a difference, a missing metric or a source without a readable run is a warning
        (``warnings``, each also raised as a ``HokusaiRegistrationWarning``), or a ``HokusaiValidationError`` with
        ``strict=True``.

        Raises:
            HokusaiValidationError: an argument breaks a rule (``field`` names it).
            HokusaiConflictError: the token is claimed by another model (the message names it), or the same token,
                model and source were registered before with another metric or baseline (``REGISTRATION_CONFLICT``).
            HokusaiAuthError, HokusaiPermissionError, HokusaiConnectionError, HokusaiAPIError: see their docs.
        """
        fields = validate_registration(
            model_uri=model_uri,
            model_name=model_name,
            token_id=token_id,
            metric_name=metric_name,
            baseline_value=baseline_value,
            tags=tags,
            description=description,
            metadata={
                "eval_spec": eval_spec,
                "scorer_ref": scorer_ref,
                "primary_metric": primary_metric,
                "benchmark_spec_id": benchmark_spec_id,
            },
        )
        request = RegistrationRequest.of(fields, strict=_checked_strict(strict))
        return _warned_of(self._register(request))

    def _register(self, request: RegistrationRequest) -> TokenizedModel:
        if self._client is None:
            return self.local.register_tokenized_model(request)
        # One key for every attempt, including retries and a later `hokusai sync`: it names the outbox entry and marks
        # the POST as one the client may send again. The server recognises a repeat by what it registers (the same
        # model, token and source answer with the version the first attempt created), not by the key.
        idempotency_key = str(uuid.uuid4())
        try:
            return self.send_registration(request.as_json(), idempotency_key)
        except (HokusaiConnectionError, HokusaiAPIError) as exc:
            if not self._may_fall_back(exc):
                raise
            if uri_scheme(request.model_uri) == "models":
                # MLflow resolves such a source through the platform's MLflow, which is down too: the local store
                # would wait minutes for it and fail anyway.
                raise exc.with_hint(
                    "a models:/ source lives in the platform's MLflow, so it cannot be registered locally while the "
                    "API is down: retry once it is back, or register from runs:/<run id>/<path>"
                ) from None
            return self._register_offline(request, idempotency_key, exc)

    def get_tokenized_model(self, model_name: str, version: str | int | None = None) -> TokenizedModel:
        """A version of a tokenized model: its number (``3`` or ``"3"``), or the latest for ``None`` or ``"latest"``.

        Raises:
            HokusaiValidationError: ``version`` is no version number from 1 (``0``, ``-1``, ``"abc"``, ``1.0``,
                ``True``); refused here, as the server would.
        """
        validate_model_name(model_name)
        number = _checked_version(version)
        if self._client is None:
            return self.local.get_tokenized_model(model_name, number)
        wanted = LATEST_VERSION if number is None else number
        path = f"{TOKENIZED_PATH}/{quote(model_name, safe='')}/versions/{wanted}"
        return _parse(TokenizedModel, self._client.request("GET", path))

    def list_tokenized_models(self, token_id: str | None = None, *, owner: str | None = None) -> list[TokenizedModel]:
        """Every tokenized model version you can see, optionally for one token or for an owner's tokens (your own; an
        admin key may name any owner), all pages."""
        token = normalize_token_id(token_id) if token_id is not None else None
        owner = validate_owner(owner) if owner is not None else None
        if self._client is None:
            return self.local.list_tokenized_models(token, owner=owner)
        filters = {name: value for name, value in (("token_id", token), ("owner", owner)) if value}
        return _all_pages(self._client, TOKENIZED_PATH, filters, "models", TokenizedModel)

    def get_token(self, token_id: str) -> TokenClaim:
        """Who holds ``token_id`` (any case): the model it belongs to, and, for your own tokens (any, with an admin
        key), the owner and whether that model still carries it.

        A token no model holds raises :class:`HokusaiNotFoundError`: the first registration with it claims it.
        """
        token_id = normalize_token_id(token_id)
        if self._client is None:
            return self.local.get_token(token_id)
        return _parse(TokenClaim, self._client.request("GET", f"{TOKENS_PATH}/{token_id}"))

    def list_baselines(self, model_type: str | None = None) -> list[BaselineEntry]:
        """Every baseline version you can see, of one model type (any case) or of all, by type then version.

        Listed entries have ``created`` False and no ``warnings``: those describe a registration call.
        """
        model_type = normalize_model_type(model_type) if model_type is not None else None
        if self._client is None:
            return self.local.list_baselines(model_type)
        filters = {"model_type": model_type} if model_type else {}
        return _all_pages(self._client, BASELINE_PATH, filters, "baselines", BaselineEntry)

    def register_baseline_via_api(
        self,
        model_type: str,
        mlflow_run_id: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        artifact_path: str = "model",
    ) -> BaselineEntry:
        """Register the model logged in ``mlflow_run_id`` (under ``artifact_path``, the ``name`` given to
        ``log_model``) as the baseline for ``model_type``.

        It becomes the next version of ``hokusai-baseline-<model_type>``, a model every user adds baselines to and
        only admins can change; its ``registered_by`` tag names you. The same run's model again returns the version
        it became (``created`` is False).
        """
        model_type = normalize_model_type(model_type)
        mlflow_run_id = validate_run_id(mlflow_run_id)
        source = run_model_uri(mlflow_run_id, artifact_path)
        metadata_json = validate_metadata(metadata)
        if self._client is None:
            return _warned_of(self.local.register_baseline(model_type, mlflow_run_id, metadata_json, source=source))
        body = {
            "model_type": model_type,
            "mlflow_run_id": mlflow_run_id,
            "artifact_path": artifact_path,
            "metadata": dict(metadata or {}) or None,
        }
        return _warned_of(_parse(BaselineEntry, self._client.request("POST", BASELINE_PATH, json=body)))

    def whoami(self) -> dict[str, Any]:
        """Who the key belongs to: ``owner``, ``key_id``, ``key_prefix``, ``scopes`` and ``expires_at``."""
        if self._client is None:
            return self.local.whoami()
        return fetch_identity(self._client)

    def send_registration(self, body: dict[str, Any], idempotency_key: str) -> TokenizedModel:
        """POST one registration body to the API (used by :func:`hokusai._sync.sync_outbox` too)."""
        if self._client is None:
            raise mock_mode_error()
        headers = {IDEMPOTENCY_HEADER: idempotency_key}
        response = self._client.request("POST", TOKENIZED_PATH, json=body, headers=headers)
        return _parse(TokenizedModel, response)

    def _may_fall_back(self, exc: HokusaiConnectionError | HokusaiAPIError) -> bool:
        # Only unavailability falls back: a 401/403 or a bad request would fail the same way after `hokusai sync`.
        unavailable = isinstance(exc, HokusaiConnectionError) or (exc.status or 0) >= 500
        return self.mode == "optional" and unavailable

    def _register_offline(
        self, request: RegistrationRequest, idempotency_key: str, exc: HokusaiConnectionError | HokusaiAPIError
    ) -> TokenizedModel:
        note = f"{LOCAL_ONLY_NOTE}, because the API failed ({exc.user_message}); run `hokusai sync`"
        if not self._warned_fallback:
            self._warned_fallback = True
            message = f"Hokusai API unavailable; HOKUSAI_OPTIONAL_MLFLOW=true, so registering locally: {exc}"
            # Logged for services' log pipelines, and warned at the caller's line (register_tokenized_model ->
            # _register -> here) for scripts and notebooks; once per registry.
            logger.warning(message)
            warnings.warn(message, RuntimeWarning, stacklevel=4)
        model = self.local.register_tokenized_model(request, notes=(note,))
        assert self._client is not None  # the fallback is of a registry that has an API
        append_entry(
            new_entry(
                idempotency_key=idempotency_key,
                request=request.as_json(),
                reason=str(exc),
                local_version=model.version,
                key_prefix=self._client.key_prefix,
            )
        )
        return model

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def __enter__(self) -> ModelRegistry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        class_name = self.__class__.__name__
        where = self._client.api_url if self._client is not None else self.local.tracking_uri
        return f"{class_name}(mode={self.mode!r}, url={where!r}, api_key='**********')"


def _all_pages(
    client: HokusaiClient, path: str, filters: dict[str, str], field: str, model: type[ModelT]
) -> list[ModelT]:
    """Every item of a paged listing: `field` of each page, followed by its `next_page_token`."""
    params: dict[str, str | int] = {"max_results": DEFAULT_PAGE_SIZE, **filters}
    items: list[ModelT] = []
    while True:
        response = client.request("GET", path, params=params)
        page = json_body(response)
        if not isinstance(page, dict) or not isinstance(page.get(field), list):
            raise unexpected_response(response, f"no '{field}' list")
        items.extend(_validated(model, item, response) for item in page[field])
        if not page.get("next_page_token"):
            return items
        params["page_token"] = page["next_page_token"]


def _checked_strict(strict: object) -> bool:
    """`strict` as the server takes it (a JSON boolean): a truthy `"yes"` or a `None` would be its 400."""
    if not isinstance(strict, bool):
        raise HokusaiValidationError("strict", f"must be True or False, not {type(strict).__name__}")
    return strict


def _checked_version(version: object) -> str | None:
    """`version` by the server's rule (`validate_version`): the number as text, or `None` for the latest.

    Version 0 is refused like any other non-version, never read as "no version" (the latest); a bool or a float is
    refused rather than read as the number it converts to (`True` is 1).
    """
    if version is None:
        return None
    if isinstance(version, bool) or not isinstance(version, str | numbers.Integral):
        raise HokusaiValidationError(
            "version", f"must be a positive version number or '{LATEST_VERSION}', not {type(version).__name__}"
        )
    return validate_version(str(version))


def _warned_of(result: RegisteredT) -> RegisteredT:
    """`result`, once each of its warnings is a `HokusaiRegistrationWarning`: a list nobody reads is no warning."""
    for message in result.warnings:
        if not message.startswith(LOCAL_ONLY_NOTE):  # the fallback itself was a RuntimeWarning already
            warnings.warn(message, HokusaiRegistrationWarning, stacklevel=3)
    return result


def _parse(model: type[ModelT], response: httpx.Response) -> ModelT:
    return _validated(model, json_body(response), response)


def _validated(model: type[ModelT], data: object, response: httpx.Response) -> ModelT:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise unexpected_response(response, f"a body that is not a {model.__name__}") from exc
