"""A trace written again needs the right to update it where it is; part of `hokusai.mlflow_auth`.

MLflow's auth app authorises `StartTraceV3` and an OTLP export (`/v1/traces`) as a *create* in the experiment the
request names. Both take the trace id from the request, and MLflow's store merges a trace id it already holds: a
`StartTraceV3` naming another user's trace moved it into the caller's experiment with the caller's state and tags,
and an OTLP export added spans to it (found by a security review, 2026-11-27). The client re-sends its own traces
(an assessment logged on an active trace, spans racing the trace's start), so a trace id that exists is not refused:
the caller needs MLflow's update permission on that trace, as `traces/set-tag` asks; and an assessment it carries
may not be another trace's (the store merges those by id too); an assessment created with an id that exists is
MLflow's 400, where its store failed with a 500, for admins too (whom MLflow's validators skip). An OTLP
export's `X-Mlflow-Run-Id` links the traces to that run, so it needs update on the run, as `runs/link-traces` does.

The OTLP body is decoded the way MLflow's `export_traces` decodes it, with MLflow's own functions; a body that does
not decode is left to that handler's 400.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request

_OtelValidator = Callable[[str, Request], Awaitable[bool]]


def install_trace_write_checks(mlflow_auth_app: Any) -> None:
    """Wrap the auth app's `StartTraceV3` and `CreateAssessment` validators and its OTLP validator factory;
    idempotent."""
    if getattr(mlflow_auth_app._get_otel_validator, "_hokusai_checked", False):
        return
    _add_to_validator(mlflow_auth_app, "validate_can_start_trace_v3", _start_trace_check(mlflow_auth_app))
    assessment_is_new = _new_assessment_check(mlflow_auth_app)
    create_assessment = _add_to_validator(mlflow_auth_app, "validate_can_create_assessment", assessment_is_new)
    _apply_to_admins(mlflow_auth_app, create_assessment, assessment_is_new)
    factory = _otel_validator_factory(mlflow_auth_app)
    factory._hokusai_checked = True  # type: ignore[attr-defined]
    # `_find_fastapi_validator` looks the factory up by name on every request.
    mlflow_auth_app._get_otel_validator = factory


def _add_to_validator(app: Any, name: str, check: Callable[[], bool]) -> Callable[[], bool]:
    """Make `check` part of the auth app's validator `name`, on every route it guards (after MLflow's own check);
    returns the validator that replaced it.

    The auth app keeps its validators in several tables: one by literal path, others by path pattern per family
    (`TRACE_PARAMETERIZED_BEFORE_REQUEST_VALIDATORS`, ...); the validator is replaced in all of them.
    """
    original = getattr(app, name)

    def validator() -> bool:
        return bool(original()) and check()

    tables = [table for key, table in vars(app).items() if key.endswith("BEFORE_REQUEST_VALIDATORS")]
    routes = [(table, route) for table in tables for route, guard in table.items() if guard is original]
    if not routes:  # MLflow moved it: fail at start, not silently
        raise RuntimeError(f"MLflow's auth app has no {name} to wrap; recheck hokusai.mlflow_auth")
    for table, route in routes:
        table[route] = validator
    return validator


def _apply_to_admins(app: Any, validator: Callable[[], bool], rule: Callable[[], bool]) -> None:
    """Run `rule`, a data-integrity rule, for an admin's request that `validator` would have guarded.

    Admins skip every validator. MLflow's own integrity rule for them (a review queue may not shadow a username) runs
    from `enforce_review_queue_name_not_username`, which `_before_request` calls for admins alone; `rule` joins it
    there, so an admin's duplicate assessment id is the same 400 as anyone's, not the store's 500.
    """
    from flask import request

    admins_rules = app.enforce_review_queue_name_not_username

    def rules_for_admins() -> None:
        admins_rules()
        if app._find_validator(request) is validator:
            rule()

    app.enforce_review_queue_name_not_username = rules_for_admins


def _start_trace_check(app: Any) -> Callable[[], bool]:
    def trace_stays_where_it_is() -> bool:
        from mlflow.protos.service_pb2 import StartTraceV3

        info = app._get_request_message(StartTraceV3()).trace.trace_info
        username = app.authenticate_request().username
        if info.trace_id and not _may_update_trace(app, username, info.trace_id):
            return False
        return _assessments_stay_on(app, info)

    return trace_stays_where_it_is


def _new_assessment_check(app: Any) -> Callable[[], bool]:
    """An assessment created with an id that exists is MLflow's 400 "already exists", not its store's 500.

    The store inserts the id it is given and fails on the table's primary key with a 500 "constraint violation",
    which clients retry as a server fault (found by the fourth security review, 2026-11-28; nothing was written).
    """

    def assessment_is_new() -> bool:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS
        from mlflow.protos.service_pb2 import CreateAssessment

        assessment_id = app._get_request_message(CreateAssessment()).assessment.assessment_id
        if assessment_id and _traces_holding(app, {assessment_id}):
            raise MlflowException(f"Assessment with ID '{assessment_id}' already exists.", RESOURCE_ALREADY_EXISTS)
        return True

    return assessment_is_new


def _assessments_stay_on(app: Any, info: Any) -> bool:
    """Whether every assessment id the trace names (its own, or one it overrides) is new or already this trace's.

    MLflow's store merges a re-sent trace's assessments by their id, the table's primary key: a re-send of one's own
    trace carrying another user's assessment id moved that assessment onto it, with the sender's value (found by a
    second security review, 2026-11-27).
    """
    named = {assessment.assessment_id for assessment in info.assessments if assessment.assessment_id}
    named |= {assessment.overrides for assessment in info.assessments if assessment.overrides}
    return not named or _traces_holding(app, named) <= {info.trace_id}


def _traces_holding(app: Any, assessment_ids: set[str]) -> set[str]:
    """The traces that hold any of these assessments (none: every id is new)."""
    from mlflow.store.tracking.dbmodels.models import SqlAssessments

    with app._get_tracking_store().ManagedSessionMaker() as session:
        held_by = session.query(SqlAssessments.trace_id).filter(SqlAssessments.assessment_id.in_(assessment_ids))
        return {trace_id for (trace_id,) in held_by.all()}


def _otel_validator_factory(app: Any) -> Callable[[str], _OtelValidator]:
    original_factory = app._get_otel_validator

    def get_otel_validator(path: str) -> _OtelValidator:
        may_create = original_factory(path)

        async def validator(username: str, request: Request) -> bool:
            from mlflow.tracing.utils.otlp import MLFLOW_RUN_ID_HEADER

            if not await may_create(username, request):
                return False
            trace_ids = exported_trace_ids(await request.body(), request.headers)
            run_id = request.headers.get(MLFLOW_RUN_ID_HEADER)
            return all(_may_update_trace(app, username, trace_id) for trace_id in trace_ids) and (
                not run_id or _may_update_run(app, username, run_id)
            )

        return validator

    return get_otel_validator


def exported_trace_ids(body: bytes, headers: Any) -> set[str]:
    """The MLflow trace ids an OTLP export writes to, decoded as `mlflow.server.otel_api.export_traces` does.

    Empty when the body does not decode: the handler then answers 400 and writes nothing.
    """
    from google.protobuf.json_format import Parse
    from mlflow.entities.span import Span
    from mlflow.server.otel_api import _convert_otlp_json_ids_to_base64
    from mlflow.tracing.utils.otlp import decompress_otlp_body
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    media_type = (headers.get("content-type") or "").split(";")[0].strip()
    parsed = ExportTraceServiceRequest()
    try:
        if encoding := headers.get("content-encoding"):
            body = decompress_otlp_body(body, encoding.lower())
        if media_type == "application/json":
            Parse(_convert_otlp_json_ids_to_base64(body), parsed, ignore_unknown_fields=True)
        else:
            parsed.ParseFromString(body)
        return {
            Span.from_otel_proto(span, resource=resource_spans.resource).trace_id
            for resource_spans in parsed.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        }
    except Exception:  # the handler decodes the same way, so it fails too (400 or 422) and writes nothing
        return set()


def _may_update_trace(app: Any, username: str, trace_id: str) -> bool:
    """MLflow's `_authorize_trace(trace_id, "update")` for a named user (the OTLP route has no Flask request); a new
    id may be written."""
    trace = app._fetch_or_none(app._get_tracking_store().get_trace_info, trace_id)
    if trace is None:
        return True
    experiment = (app.RESOURCE_TYPE_EXPERIMENT, trace.experiment_id)
    return app.authorize(
        username,
        experiment,
        [
            app.Requirement(app.RESOURCE_TYPE_EXPERIMENT, trace.experiment_id, "read"),
            app.Requirement(app.RESOURCE_TYPE_TRACE, "*", "update", fallback_if_no_grant=(experiment,)),
        ],
    )


def _may_update_run(app: Any, username: str, run_id: str) -> bool:
    """Update on the run the export links its traces to; an unknown run is left to the handler, which links none."""
    resolved = app._run_requirement(run_id, "update")
    return resolved is None or app.authorize(username, *resolved)
