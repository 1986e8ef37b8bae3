"""OpenTelemetry traces of the serving requests, sent over OTLP/HTTP (protobuf) to a collector.

Optional: the `trace` extra (opentelemetry-sdk and its OTLP/HTTP exporter), and off unless
`otlp_endpoint` is set (ATOM_OTLP_ENDPOINT, e.g. http://collector:4318/v1/traces). Off, nothing
of OpenTelemetry is imported and a request pays one `is None` test.

`otlp_sample_ratio` (ATOM_OTLP_SAMPLE_RATIO) traces that share of the requests, chosen by trace id;
a request left out gets no trace object at all.

Each /v1 request is one trace: a server span for the request (its id, route, status and the
model it ran as attributes) with children for the work it went through:

- `parse`: the body parsed, validated and tokenized (a prepare thread);
- `queue`: from handing its items to the model's batcher until its first batch started;
- `batch`: each batch that ran its items (several for a long text read in windows), with
  `inference` (the ONNX Runtime call; the batch's size as `atom.batch.items`) and
  `neighbor_search` below it.

A batch is shared by many requests: its spans are written into each of their traces, timed from
the clock readings the runtime takes around every batch (service/runtime.py `BatchTiming`), so
the inference thread itself never touches OpenTelemetry.
"""

from __future__ import annotations

import time
from typing import Any, Iterable

from .runtime import BatchTiming

SERVICE_NAME = "atomizer"


class TracingUnavailable(RuntimeError):
    """`otlp_endpoint` is set but the `trace` extra is not installed."""


class Tracing:
    def __init__(self, endpoint: str, service_name: str = SERVICE_NAME, export_delay_ms: int = 1000,
                 sample_ratio: float = 1.0):
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.sdk.trace.sampling import ALWAYS_ON, TraceIdRatioBased
        except ImportError as exc:
            raise TracingUnavailable(f"otlp_endpoint is set but tracing needs the `trace` extra "
                                     f"(pip install 'atomizer[trace]'): {exc}") from None
        sampler = ALWAYS_ON if sample_ratio >= 1.0 else TraceIdRatioBased(sample_ratio)
        self.provider = TracerProvider(resource=Resource.create({"service.name": service_name}), sampler=sampler)
        exporter = OTLPSpanExporter(endpoint=endpoint, timeout=10)
        self.provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=export_delay_ms))
        self.tracer = self.provider.get_tracer("atomizer.service")

    def request(self, method: str, route: str, request_id: str) -> "RequestTrace | None":
        """The request's trace, or None when the sampler leaves it out (`sample_ratio`)."""
        trace = RequestTrace(self.tracer, method, route, request_id)
        return trace if trace.root.is_recording() else None

    def shutdown(self) -> None:
        """Send what is buffered, then stop (the lifespan's end)."""
        self.provider.shutdown()


class RequestTrace:
    """One request's trace: the server span, and its children added as the request goes."""

    def __init__(self, tracer: Any, method: str, route: str, request_id: str):
        from opentelemetry import trace

        self._tracer = tracer
        self.root = tracer.start_span(f"{method} {route}", kind=trace.SpanKind.SERVER, attributes={
            "http.request.method": method, "http.route": route, "atom.request_id": request_id})
        self._context = trace.set_span_in_context(self.root)
        self._trace = trace

    def child(self, name: str, start_ns: int, end_ns: int, parent: Any = None, **attributes: Any) -> Any:
        context = self._context if parent is None else self._trace.set_span_in_context(parent)
        span = self._tracer.start_span(name, context=context, start_time=start_ns, attributes=attributes or None)
        span.end(end_time=end_ns)
        return span

    def parsed(self, start_ns: int, model: str) -> None:
        self.root.set_attribute("atom.model", model)
        self.child("parse", start_ns, time.time_ns(), **{"atom.model": model})

    def batches(self, submitted_ns: int, timings: Iterable[BatchTiming | None]) -> None:
        """`queue` until the first of the request's batches started, then each batch's spans."""
        distinct = {id(t): t for t in timings if t is not None}.values()
        if not distinct:
            return
        self.child("queue", submitted_ns, max(submitted_ns, min(t.started_ns for t in distinct)))
        for t in sorted(distinct, key=lambda t: t.started_ns):
            batch = self.child("batch", t.started_ns, t.searched_ns, **{"atom.batch.items": t.items})
            self.child("inference", t.started_ns, t.inferred_ns, parent=batch, **{"atom.batch.items": t.items})
            self.child("neighbor_search", t.inferred_ns, t.searched_ns, parent=batch,
                       **{"atom.neighbors.searched": t.searched})

    def end(self, status: int, model: str = "") -> None:
        self.root.set_attribute("http.response.status_code", status)
        if model:
            self.root.set_attribute("atom.model", model)
        if status >= 500:
            self.root.set_status(self._trace.Status(self._trace.StatusCode.ERROR))
        self.root.end()
