"""`hokusai.mlflow_auth.trace_writes`: the trace ids an OTLP export writes to, read as MLflow's handler reads them."""

from __future__ import annotations

import gzip
import json

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from hokusai.mlflow_auth.trace_writes import exported_trace_ids

OTEL_TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


def _protobuf_export() -> bytes:
    export = ExportTraceServiceRequest()
    span = export.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = bytes.fromhex(OTEL_TRACE_ID), bytes.fromhex("b7ad6b7169203331"), "s"
    return export.SerializeToString()


def test_protobuf_json_and_compressed_exports_name_the_mlflow_trace_id() -> None:
    span = {"traceId": OTEL_TRACE_ID, "spanId": "b7ad6b7169203331", "name": "s"}
    as_json = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).encode()

    assert exported_trace_ids(_protobuf_export(), {"content-type": "application/x-protobuf"}) == {f"tr-{OTEL_TRACE_ID}"}
    assert exported_trace_ids(as_json, {"content-type": "application/json; charset=utf-8"}) == {f"tr-{OTEL_TRACE_ID}"}
    compressed = {"content-type": "application/x-protobuf", "content-encoding": "gzip"}
    assert exported_trace_ids(gzip.compress(_protobuf_export()), compressed) == {f"tr-{OTEL_TRACE_ID}"}


def test_an_export_that_does_not_decode_names_no_trace() -> None:
    assert exported_trace_ids(b"{not json", {"content-type": "application/json"}) == set()
    unknown_encoding = {"content-type": "application/x-protobuf", "content-encoding": "br"}
    assert exported_trace_ids(b"\x00\xff", unknown_encoding) == set()
