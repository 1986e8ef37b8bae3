"""Traces (issue 21): with an OTLP endpoint set, every /v1 request is a trace that arrives at a real
OTLP/HTTP receiver started here on 127.0.0.1, which decodes the protobuf payloads it gets."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from service.app import create_app
from service.tracing import RequestTrace, Tracing


class Receiver:
    """An OTLP/HTTP trace receiver: POST /v1/traces with an ExportTraceServiceRequest (protobuf)."""

    def __init__(self):
        self.spans: list = []
        self.content_types: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.content_types.append(self.headers.get("Content-Type", ""))
                request = ExportTraceServiceRequest.FromString(body)
                for resource_spans in request.resource_spans:
                    service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                    for scope_spans in resource_spans.scope_spans:
                        receiver.spans += [(service, span) for span in scope_spans.spans]
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if self.path == "/v1/traces" else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Receiver":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()


def attributes(span) -> dict:
    out = {}
    for a in span.attributes:
        value = a.value
        out[a.key] = value.string_value if value.HasField("string_value") else value.int_value \
            if value.HasField("int_value") else value.bool_value
    return out


@pytest.mark.parametrize("chunk", [False, True])
def test_a_traced_request_arrives_with_its_spans(text_case, chunk):
    with Receiver() as receiver:
        with TestClient(create_app(text_case.settings(otlp_endpoint=receiver.url))) as client:
            body = {"inputs": ["t01 t02 t03", "t04"], "neighbors": 2, "chunk": chunk}
            response = client.post("/v1/atomize", json=body, headers={"x-request-id": "trace-me-1"})
            assert response.status_code == 200
            assert client.get("/healthz").status_code == 200  # not a /v1 request: no trace
        # the lifespan's end flushed the spans
    assert receiver.content_types and all(t == "application/x-protobuf" for t in receiver.content_types)
    spans = {span.name: (service, span) for service, span in receiver.spans}
    assert {"POST /v1/atomize", "parse", "queue", "batch", "inference", "neighbor_search"} <= set(spans)
    assert not any("healthz" in name for name in spans)
    service, root = spans["POST /v1/atomize"]
    assert service["service.name"] == "atomizer"
    model = text_case.bundle.manifest.name
    assert attributes(root) | {"atom.request_id": "trace-me-1", "atom.model": model, "http.response.status_code": 200} \
        == attributes(root)
    assert root.kind == root.SPAN_KIND_SERVER and len(root.parent_span_id) == 0
    by_id = {span.span_id: span for _, span in receiver.spans}
    assert all(span.trace_id == root.trace_id for _, span in receiver.spans)
    for name in ("parse", "queue", "batch"):
        assert spans[name][1].parent_span_id == root.span_id, name
    for name in ("inference", "neighbor_search"):
        assert by_id[spans[name][1].parent_span_id].name == "batch", name
    sizes = [attributes(span)["atom.batch.items"] for _, span in receiver.spans if span.name == "inference"]
    assert all(size >= 1 for size in sizes) and sum(sizes) >= 2  # both inputs ran, in one batch or two
    for _, span in receiver.spans:  # every span inside the request's time
        assert root.start_time_unix_nano <= span.start_time_unix_nano <= span.end_time_unix_nano <= root.end_time_unix_nano
    assert ("pool_and_search" in spans) == chunk  # the windows' atoms pooled and searched after their batch


def test_an_error_is_traced_with_its_status(text_case):
    with Receiver() as receiver:
        with TestClient(create_app(text_case.settings(otlp_endpoint=receiver.url))) as client:
            assert client.post("/v1/embeddings", json={"input": "t01", "model": "nope"}).status_code == 404
    (root,) = [span for _, span in receiver.spans if span.name == "POST /v1/embeddings"]
    assert attributes(root)["http.response.status_code"] == 404


def test_a_sample_ratio_leaves_requests_out(text_case):
    with Receiver() as receiver:
        settings = text_case.settings(otlp_endpoint=receiver.url, otlp_sample_ratio=1e-9)
        with TestClient(create_app(settings)) as client:
            assert all(client.post("/v1/atomize", json={"inputs": ["t01"]}).status_code == 200 for _ in range(20))
        assert receiver.spans == []  # 20 requests, none sampled at a ratio of 1e-9
    with Receiver() as receiver:
        with TestClient(create_app(text_case.settings(otlp_endpoint=receiver.url, otlp_sample_ratio=1.0))) as client:
            assert all(client.post("/v1/atomize", json={"inputs": ["t01"]}).status_code == 200 for _ in range(5))
    assert sum(span.name == "POST /v1/atomize" for _, span in receiver.spans) == 5
    with pytest.raises(ValueError, match="otlp_sample_ratio"):
        text_case.settings(otlp_endpoint=receiver.url, otlp_sample_ratio=0.0)
    # a request left out has no trace object at all: it pays what it pays with tracing off
    assert Tracing(receiver.url, sample_ratio=1e-9).request("POST", "/v1/atomize", "r1") is None
    assert isinstance(Tracing(receiver.url, sample_ratio=1.0).request("POST", "/v1/atomize", "r2"), RequestTrace)
