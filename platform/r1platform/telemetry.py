"""OpenTelemetry and Prometheus setup shared by serving, training and the pool controller.

One TracerProvider per process. It exports over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is
set (the standard OTel variable, so collectors configure us like any other service), and tests
attach an in-memory exporter to read spans back.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

_lock = threading.Lock()
_provider: TracerProvider | None = None


def setup_tracing(service_name: str = "r1-platform") -> TracerProvider:
    """Install (once) the process-wide provider; safe to call from every entrypoint."""
    global _provider
    with _lock:
        if _provider is not None:
            return _provider
        provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
        ):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
        # set_tracer_provider refuses to replace an existing SDK provider; keep whichever won.
        current = trace.get_tracer_provider()
        _provider = current if isinstance(current, TracerProvider) else provider
        return _provider


def get_tracer(name: str) -> trace.Tracer:
    setup_tracing()
    return trace.get_tracer(name)


def add_exporter(exporter: SpanExporter, *, batch: bool = False) -> None:
    """Attach an extra exporter (tests use InMemorySpanExporter; a file exporter for records)."""
    provider = setup_tracing()
    proc = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    provider.add_span_processor(proc)


def in_memory_exporter() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    add_exporter(exporter)
    return exporter


@contextmanager
def span(tracer_name: str, name: str, **attributes: Any) -> Iterator[trace.Span]:
    """A span whose None-valued attributes are dropped (OTel rejects None)."""
    tracer = get_tracer(tracer_name)
    with tracer.start_as_current_span(name) as s:
        set_attributes(s, attributes)
        yield s


def set_attributes(s: trace.Span, attributes: dict[str, Any]) -> None:
    for key, value in attributes.items():
        if value is not None:
            s.set_attribute(key, value)
