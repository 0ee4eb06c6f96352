"""Request and response bodies of the Hokusai API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonDict, JsonValue

from hokusai.server.models import ApiKey, Token
from hokusai.validation import (
    ARTIFACT_PATH_MAX_LENGTH,
    KEY_MAX_LIFETIME_DAYS,
    KEY_NAME_MAX_LENGTH,
    METADATA_FIELD_MAX_LENGTH,
    METRIC_NAME_MAX_LENGTH,
    METRIC_NAME_PATTERN,
    MODEL_NAME_MAX_LENGTH,
    MODEL_TYPE_PATTERN,
    OWNER_PATTERN,
    RUN_ID_PATTERN,
    SCOPES,
    TOKEN_ID_MAX_LENGTH,
    TOKEN_ID_PATTERN,
    tag_value_problem,
    unpaired_surrogate_at,
)

# JSON Schema for rules that hokusai.validation enforces; routes document their parameters with them too.
TOKEN_ID_RULES: JsonDict = {"pattern": TOKEN_ID_PATTERN, "maxLength": TOKEN_ID_MAX_LENGTH}
OWNER_RULES: JsonDict = {"pattern": OWNER_PATTERN}


class RequestBody(BaseModel):
    """A request's JSON body: no field beyond the documented ones, and text that is Unicode.

    JSON may carry an unpaired UTF-16 surrogate (`"\\ud800"`), which no database or UTF-8 body takes: in a model
    name, a description or a tag it was a 500 at the first write (found by a security review, 2026-11-28).
    """

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _text_is_unicode(cls, data: Any) -> Any:
        where = unpaired_surrogate_at(data)
        if where is not None:
            raise ValueError(f"{where} holds an unpaired UTF-16 surrogate (e.g. \\ud800), which is not Unicode text")
        return data


class KeyCreate(RequestBody):
    name: str = Field(default="default", description="A label; no control characters", max_length=KEY_NAME_MAX_LENGTH)
    owner: str | None = Field(
        default=None,
        description="Admins only; defaults to the caller's own account",
        json_schema_extra=OWNER_RULES,
    )
    scopes: list[str] = Field(
        default_factory=lambda: ["read", "write"],
        min_length=1,
        max_length=3,
        description="A scope implies those before it: read, write, admin",
        json_schema_extra={"items": {"type": "string", "enum": list(SCOPES)}},
    )
    expires_in_days: StrictInt | None = Field(default=None, ge=1, le=KEY_MAX_LIFETIME_DAYS)


class KeyInfo(BaseModel):
    id: str
    name: str
    owner: str
    scopes: list[str]
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def of(cls, record: ApiKey) -> KeyInfo:
        return cls(
            id=record.id,
            name=record.name,
            owner=record.owner,
            scopes=record.scopes.split(","),
            prefix=record.prefix,
            created_at=record.created_at,
            expires_at=record.expires_at,
            revoked_at=record.revoked_at,
            last_used_at=record.last_used_at,
        )


class KeyCreated(KeyInfo):
    key: str = Field(description="The full key. It is shown this once and cannot be recovered.")


class KeyList(BaseModel):
    keys: list[KeyInfo]


class WhoAmI(BaseModel):
    owner: str
    key_id: str
    key_prefix: str
    scopes: list[str]
    expires_at: datetime | None
    is_admin: bool


# --- errors ---------------------------------------------------------------------------------------------------


class ErrorBody(BaseModel):
    """The one error envelope of the API."""

    error_code: str = Field(description="e.g. INVALID_PARAMETER_VALUE, PERMISSION_DENIED, TOKEN_ALREADY_CLAIMED")
    message: str
    layer: str = Field(description="Who refused: `hokusai-api` or `mlflow`")
    field: str | None = Field(default=None, description="The input field a 400 is about, when there is one")


_ERROR_DESCRIPTIONS = {
    400: "Invalid input: a field breaks a rule (the message names it)",
    401: "Missing, unknown, expired or revoked API key",
    403: "The key lacks a scope, or MLflow's permissions refuse the resource (`layer: mlflow`)",
    404: "No such token, model, version or run",
    409: (
        "The token is already claimed by another model (`TOKEN_ALREADY_CLAIMED`), or the same registration was made "
        "before with another metric or baseline (`REGISTRATION_CONFLICT`)"
    ),
    429: "MLflow is rate limiting requests",
    502: "MLflow answered with an unexpected error",
    503: "MLflow is unreachable; retry after `Retry-After` seconds",
    504: "MLflow did not answer in time",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for error statuses, all in the envelope; 400/401/403 apply to every route."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in sorted({400, 401, 403, *statuses}):
        entry: dict[str, Any] = {"model": ErrorBody, "description": _ERROR_DESCRIPTIONS[status]}
        if status == 503:
            entry["headers"] = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "string"}}}
        responses[status] = entry
    return responses


def without_fastapis_422(schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document without the 422 FastAPI lists on every route with parameters.

    This API never sends one: its validation errors are 400s in the envelope (`errors.install_error_handlers`),
    and a client generated from the document would otherwise expect FastAPI's `HTTPValidationError`.
    """
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            operation.get("responses", {}).pop("422", None)
    components = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    return schema


# Any one of these carries the key; the document says so, where FastAPI's own security classes would also read the
# headers and answer malformed ones with their own 401 (the API's messages say what to fix: see `credentials`).
KEY_SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "`Authorization: Bearer <your Hokusai key>`"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "Your Hokusai key"},
    "basic": {"type": "http", "scheme": "basic", "description": "Any username, your Hokusai key as the password"},
}


def with_key_security(schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document with the key every `/api/v1` operation needs (the probes need none)."""
    schema.setdefault("components", {})["securitySchemes"] = KEY_SECURITY_SCHEMES
    for path, operations in schema.get("paths", {}).items():
        if path.startswith("/api/v1/"):
            for operation in operations.values():
                operation["security"] = [{name: []} for name in KEY_SECURITY_SCHEMES]
    return schema


# --- tokenized models -----------------------------------------------------------------------------------------

TagValue = StrictStr | StrictInt | StrictFloat | StrictBool


def _documented(description: str, **rules: JsonValue) -> Any:
    """A field whose rules are documented in the schema but enforced by `hokusai.validation`, for one message."""
    return Field(description=description, json_schema_extra=rules)


_METADATA: JsonDict = {"minLength": 1, "maxLength": METADATA_FIELD_MAX_LENGTH}
_SOURCES = ("model_uri", "mlflow_run_id")


def _only_source(source: str) -> dict[str, Any]:
    """The JSON Schema of "this source given, the other absent or null"."""
    other = next(name for name in _SOURCES if name != source)
    return {"required": [source], "properties": {source: {"type": "string"}, other: {"type": "null"}}}


class TokenizedModelCreate(RequestBody):
    """Register a model version for a token. Give `model_uri`, or `mlflow_run_id` (+ `artifact_path`)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"oneOf": [_only_source(name) for name in _SOURCES]})

    model_uri: StrictStr | None = Field(default=None, description="e.g. `runs:/<run id>/model` or `models:/<id>`")
    mlflow_run_id: StrictStr | None = Field(
        default=None,
        description="Shorthand for `runs:/<id>/<artifact_path>`",
        json_schema_extra={"pattern": RUN_ID_PATTERN},
    )
    artifact_path: StrictStr = Field(default="model", min_length=1, max_length=ARTIFACT_PATH_MAX_LENGTH)
    model_name: StrictStr = _documented("The registered model", minLength=1, maxLength=MODEL_NAME_MAX_LENGTH)
    token_id: StrictStr = _documented("Letters, digits and inner hyphens; stored upper-case", **TOKEN_ID_RULES)
    metric_name: StrictStr = _documented(
        "The benchmark metric, as logged in the run", pattern=METRIC_NAME_PATTERN, maxLength=METRIC_NAME_MAX_LENGTH
    )
    baseline_value: StrictFloat = Field(description="A finite number")
    tags: dict[str, TagValue] | None = None
    description: StrictStr | None = None

    @field_validator("tags", mode="before")
    @classmethod
    def _tag_values_are_scalars(cls, tags: object) -> object:
        # One message for a bad tag, where pydantic gives one per member of TagValue (str, int, float, bool).
        for key, value in tags.items() if isinstance(tags, dict) else ():
            problem = tag_value_problem(str(key), value)
            if problem is not None:
                raise ValueError(problem)
        return tags

    eval_spec: StrictStr | None = Field(default=None, json_schema_extra=_METADATA)
    scorer_ref: StrictStr | None = Field(default=None, json_schema_extra=_METADATA)
    primary_metric: StrictStr | None = Field(default=None, json_schema_extra=_METADATA)
    benchmark_spec_id: StrictStr | None = Field(default=None, json_schema_extra=_METADATA)
    strict: StrictBool = Field(
        default=False,
        description="Refuse (400) when the source's run (of a `runs:/` or `models:/<id>` source) lacks the metric "
        "or has another value; without it that is a warning",
    )


class TokenizedModelInfo(BaseModel):
    model_name: str
    version: str
    token_id: str
    metric_name: str
    baseline_value: float
    run_id: str | None
    model_uri: str = Field(description="`models:/<name>/<version>`")
    source: str = Field(description="Where MLflow loads the version from")
    tags: dict[str, str]
    warnings: list[str] = Field(default_factory=list)
    created: bool = False


class TokenizedModelList(BaseModel):
    models: list[TokenizedModelInfo]
    next_page_token: str | None


class BaselineCreate(RequestBody):
    """Register a run's model as a baseline version of `hokusai-baseline-<model_type>`."""

    model_type: StrictStr = _documented("e.g. `classification`", pattern=MODEL_TYPE_PATTERN)
    mlflow_run_id: StrictStr = _documented("The run whose model is the baseline", pattern=RUN_ID_PATTERN)
    artifact_path: StrictStr = Field(default="model", min_length=1, max_length=ARTIFACT_PATH_MAX_LENGTH)
    metadata: dict[str, Any] | None = None


class BaselineInfo(BaseModel):
    model_name: str
    version: str
    model_type: str
    run_id: str
    model_uri: str
    tags: dict[str, str]
    created: bool = Field(
        default=True, description="False: this run's model was already a baseline of this type (and in listings)"
    )
    warnings: list[str] = Field(default_factory=list, description="What a repeat did not apply, in sentences")


class BaselineList(BaseModel):
    baselines: list[BaselineInfo]
    next_page_token: str | None


# --- tokens ---------------------------------------------------------------------------------------------------


class TokenInfo(BaseModel):
    token_id: str
    model_name: str
    owner: str | None = Field(description="Shown only to the owner and to admins")
    created_at: datetime
    model_carries_token: bool | None = Field(
        default=None,
        description=(
            "Whether a version of `model_name` still carries the token: false once that model was deleted or "
            "renamed straight on MLflow (the owner's next registration of the token on another model moves it "
            "there). In lookups by the owner or an admin; null otherwise."
        ),
    )

    @classmethod
    def of(cls, token: Token, *, show_owner: bool, model_carries_token: bool | None = None) -> TokenInfo:
        return cls(
            token_id=token.token_id,
            model_name=token.model_name,
            owner=token.owner if show_owner else None,
            created_at=token.created_at,
            model_carries_token=model_carries_token,
        )


class TokenTransfer(RequestBody):
    new_owner: StrictStr = _documented("The account that will hold the token", **OWNER_RULES)
    model_name: StrictStr | None = Field(
        default=None,
        description="Move the token to this model too",
        json_schema_extra={"minLength": 1, "maxLength": MODEL_NAME_MAX_LENGTH},
    )


# --- audit ----------------------------------------------------------------------------------------------------


class AuditEventInfo(BaseModel):
    id: int
    at: datetime
    actor: str
    key_id: str | None
    action: str
    target: str | None
    outcome: str
    detail: dict[str, Any] | None
    request_id: str | None


class AuditEventList(BaseModel):
    events: list[AuditEventInfo]
    next_page_token: str | None
