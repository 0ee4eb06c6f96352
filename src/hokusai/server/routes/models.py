"""Tokenized models and baselines: register model versions in MLflow as the caller, and look them up."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response, status

from hokusai.errors import ErrorCode
from hokusai.server.api_route import ApiRoute
from hokusai.server.audit import Caller
from hokusai.server.deps import ReaderDep, StateDep, WriterDep
from hokusai.server.errors import ApiError
from hokusai.server.registry import baselines, lookups, tokenized
from hokusai.server.registry.tokenized import Registration
from hokusai.server.schemas import (
    OWNER_RULES,
    TOKEN_ID_RULES,
    BaselineCreate,
    BaselineInfo,
    BaselineList,
    TokenizedModelCreate,
    TokenizedModelInfo,
    TokenizedModelList,
    error_responses,
)
from hokusai.validation import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    METADATA_FIELDS,
    MODEL_NAME_MAX_LENGTH,
    MODEL_TYPE_PATTERN,
    NO_CONTROL_CHARS_PATTERN,
    VERSION_PATTERN,
    normalize_model_type,
    normalize_token_id,
    validate_owner,
)

router = APIRouter(prefix="/api/v1/models", route_class=ApiRoute, tags=["models"])

PAGE_TOKEN_MAX_LENGTH = 2048  # an owner listing's token names a model (256 characters, UTF-8)
# Documented here, enforced by the registry (one rule, one message).
Version = Annotated[
    str, Path(description="A version number or `latest`", json_schema_extra={"pattern": VERSION_PATTERN})
]
ModelName = Annotated[
    str,
    Path(
        description="The registered model",
        json_schema_extra={"pattern": NO_CONTROL_CHARS_PATTERN, "maxLength": MODEL_NAME_MAX_LENGTH},
    ),
]
TokenIdQuery = Annotated[str | None, Query(json_schema_extra=TOKEN_ID_RULES)]
ModelTypeQuery = Annotated[
    str | None,
    Query(description="Only this type's baselines (any case)", json_schema_extra={"pattern": MODEL_TYPE_PATTERN}),
]
PageTokenQuery = Annotated[str | None, Query(max_length=PAGE_TOKEN_MAX_LENGTH)]
MaxResultsQuery = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]
OwnerQuery = Annotated[str | None, Query(description="Tokens held by this account", json_schema_extra=OWNER_RULES)]


@router.post(
    "/tokenized",
    status_code=status.HTTP_201_CREATED,
    response_model=TokenizedModelInfo,
    responses={
        200: {"model": TokenizedModelInfo, "description": "Already registered from this source: the existing version"},
        **error_responses(404, 409, 429, 502, 503, 504),
    },
)
async def create_tokenized_model(
    body: TokenizedModelCreate, request: Request, response: Response, state: StateDep, principal: WriterDep
) -> TokenizedModelInfo:
    """Claim the token and register a model version for it.

    A repeat (same model, token, source, metric and baseline) answers 200 with the existing version; the same model,
    token and source with another metric or baseline is a 409 `REGISTRATION_CONFLICT`.
    """
    registration = Registration.build(
        model_uri=body.model_uri,
        mlflow_run_id=body.mlflow_run_id,
        artifact_path=body.artifact_path,
        model_name=body.model_name,
        token_id=body.token_id,
        metric_name=body.metric_name,
        baseline_value=body.baseline_value,
        tags=body.tags,
        description=body.description,
        metadata={name: getattr(body, name) for name in METADATA_FIELDS},
        strict=body.strict,
    )
    info = await tokenized.register_tokenized_model(
        database=state.database,
        upstream=state.upstream,
        audit=state.audit,
        caller=Caller.of(request, principal),
        registration=registration,
    )
    if not info.created:
        response.status_code = status.HTTP_200_OK
    return info


@router.get("/tokenized", response_model=TokenizedModelList, responses=error_responses(429, 502, 503, 504))
async def read_tokenized_models(
    state: StateDep,
    principal: ReaderDep,
    token_id: TokenIdQuery = None,
    owner: OwnerQuery = None,
    page_token: PageTokenQuery = None,
    max_results: MaxResultsQuery = DEFAULT_PAGE_SIZE,
) -> TokenizedModelList:
    """List tokenized model versions you may read, by token and/or token owner (yourself; any owner for admins), in
    pages.

    A version is listed while its model holds the token it is tagged with; a page may hold fewer than `max_results`.
    """
    owner = validate_owner(owner) if owner is not None else None
    if owner is not None and owner != principal.owner and not principal.is_admin:
        # Who holds a token is shown to its owner and to admins only (as `GET /api/v1/tokens/{id}` shows it): a
        # filter by another owner would answer "does alice hold X?" (security review, 2026-11-28).
        raise ApiError(
            403,
            f"Only admin keys may list the models of another owner's tokens; list your own with owner="
            f"{principal.owner} (`--owner {principal.owner}` in the CLI, or no owner), or filter by token_id.",
            error_code=ErrorCode.PERMISSION_DENIED,
        )
    return await lookups.list_tokenized_models(
        database=state.database,
        upstream=state.upstream,
        principal=principal,
        token_id=normalize_token_id(token_id) if token_id is not None else None,
        owner=owner,
        page_token=page_token,
        max_results=max_results,
    )


@router.get(
    "/tokenized/{model_name:path}/versions/{version}",
    response_model=TokenizedModelInfo,
    responses=error_responses(404, 429, 502, 503, 504),
)
async def read_tokenized_model(
    model_name: ModelName, version: Version, state: StateDep, principal: ReaderDep
) -> TokenizedModelInfo:
    """One tokenized model version; `version` is a number or `latest`."""
    return await lookups.get_tokenized_model(
        database=state.database, upstream=state.upstream, principal=principal, model_name=model_name, version=version
    )


@router.post(
    "/baseline",
    status_code=status.HTTP_201_CREATED,
    response_model=BaselineInfo,
    responses={
        200: {"model": BaselineInfo, "description": "This run's model is already a baseline of this type: that one"},
        **error_responses(404, 429, 502, 503, 504),
    },
)
async def create_baseline(
    body: BaselineCreate, request: Request, response: Response, state: StateDep, principal: WriterDep
) -> BaselineInfo:
    """Register a run's model as a baseline version of `hokusai-baseline-<model_type>`; the same again is a 200."""
    info = await baselines.register_baseline(
        database=state.database,
        upstream=state.upstream,
        audit=state.audit,
        caller=Caller.of(request, principal),
        model_type=body.model_type,
        run_id=body.mlflow_run_id,
        artifact_path=body.artifact_path,
        metadata=body.metadata,
    )
    if not info.created:
        response.status_code = status.HTTP_200_OK
    return info


@router.get("/baseline", response_model=BaselineList, responses=error_responses(429, 502, 503, 504))
async def read_baselines(
    state: StateDep,
    principal: ReaderDep,
    model_type: ModelTypeQuery = None,
    page_token: PageTokenQuery = None,
    max_results: MaxResultsQuery = DEFAULT_PAGE_SIZE,
) -> BaselineList:
    """List the baseline versions you may read, of one model type or of all, by type then version, in pages."""
    return await baselines.list_baselines(
        upstream=state.upstream,
        principal=principal,
        model_type=normalize_model_type(model_type) if model_type is not None else None,
        page_token=page_token,
        max_results=max_results,
    )
