"""OpenTelemetry traces, exported by OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; the other standard `OTEL_*` variables (service
name, headers, sampler, batch delays) apply as the SDK reads them.

Without the variable nothing of OpenTelemetry is imported and `span()` hands back one shared
object whose enter and exit do nothing: the publish and delivery paths pay a call and a `None`
check, no allocation. Spans: `clarion.publish` (around `.validate`, `.commit` of its group
commit, `.broker`), `clarion.fanout` (an event given to this node's sessions), `clarion.push.send`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger("clarion.tracing")
ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


class _NoSpan:
    """Stands for a span and for its context manager when tracing is off."""

    def __enter__(self) -> _NoSpan:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def set_attribute(self, key: str, value: Any) -> None:
        return None


NOSPAN = _NoSpan()
_tracer: Any = None
_provider: Any = None


def enabled() -> bool:
    return _tracer is not None


def span(name: str, **attributes: Any) -> Any:
    """A context manager for a span named `name` (a no-op when tracing is off)."""
    if _tracer is None:
        return NOSPAN
    return _tracer.start_as_current_span(name, attributes=attributes)


def start() -> bool:
    """Set up export when the environment asks for it; returns whether it did."""
    global _tracer, _provider
    if _tracer is not None or not any(os.environ.get(v) for v in ENDPOINT_VARS):
        return _tracer is not None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from clarion import __version__

    # `OTEL_RESOURCE_ATTRIBUTES` is read by `Resource.create`; the name defaults to "clarion".
    name = os.environ.get("OTEL_SERVICE_NAME") or "clarion"
    resource = Resource.create({SERVICE_NAME: name, "service.version": __version__})
    _provider = TracerProvider(resource=resource)
    _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _tracer = _provider.get_tracer("clarion", __version__)
    log.info("exporting traces by OTLP/HTTP")
    return True


def stop() -> None:
    """Flush what is buffered (on shutdown)."""
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    _tracer = _provider = None
