"""
The apps of the two-process tracing test: C{one} (an idle handler that places one order),
C{two} (packs it) and C{three} (books it), in two processes over RabbitMQ. Each builder
sets the process's OpenTelemetry SDK up first, as a deployment's own code would: spans
go, one JSON object a line, to the file C{root.spans} names.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from scbus import Message


class Placed(Message, wire_name="tracing.Placed"):
    sku: str


class Packed(Message, wire_name="tracing.Packed"):
    sku: str


class FileExporter(SpanExporter):
    """Each finished span as one line of JSON, written at once."""

    def __init__(self, path: str) -> None:
        self._file = open(path, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            for span in spans:
                self._file.write(json.dumps(_as_data(span)) + "\n")
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._file.close()


def _hex(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def _as_data(span: ReadableSpan) -> dict[str, Any]:
    context = span.get_span_context()
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": _hex(context.trace_id, 32),
        "span_id": _hex(context.span_id, 16),
        "parent_id": _hex(span.parent.span_id, 16) if span.parent is not None else None,
        "remote_parent": bool(span.parent is not None and span.parent.is_remote),
        "attributes": dict(span.attributes or {}),
        "service": (span.resource.attributes or {}).get("service.name"),
    }


def _set_up_tracing(root_config: dict[str, Any]) -> None:
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return  # the process's other builder did it
    provider = TracerProvider(resource=Resource.create({"service.name": root_config["service"]}))
    provider.add_span_processor(SimpleSpanProcessor(FileExporter(root_config["spans"])))
    trace.set_tracer_provider(provider)


def make_one(name: str, root_config: dict[str, Any], config: dict[str, Any]) -> dict[Any, Any]:
    _set_up_tracing(root_config)
    placed: list[str] = []

    def place() -> Placed | None:
        if placed:
            return None
        placed.append("tea")
        return Placed(sku="tea")

    return {timedelta(seconds=0.2): place}


def make_two(name: str, root_config: dict[str, Any], config: dict[str, Any]) -> dict[Any, Any]:
    _set_up_tracing(root_config)
    return {Placed: lambda placed: Packed(sku=placed.sku)}


def make_three(name: str, root_config: dict[str, Any], config: dict[str, Any]) -> dict[Any, Any]:
    _set_up_tracing(root_config)
    return {Packed: lambda packed: None}
