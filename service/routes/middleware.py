"""The outermost HTTP layer: request id, admission limit, body-size limit, request metrics, last-resort 500.

A pure ASGI middleware (not BaseHTTPMiddleware) so it can refuse a request before anything
reads or parses its body (too many /v1 requests in flight: 429; a body past the limit: 413), and
see the status of every response, errors included. /healthz, /readyz and /metrics are never
refused by the admission limit: an overloaded service must still say so.

The serving routes (POST /v1/atomize, /v1/embeddings) are called from here directly when
`direct` names them: the same endpoint, its `Serving` parts built by `serving_of` and its domain
errors answered in the one error shape, without the framework's layers between (its middleware
stack, routing, dependency solving), which cost a small model more CPU than its inference
(benchmarks/request_cost.py). Every other route goes through FastAPI.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import time
from collections.abc import Callable

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import AtomError, InternalError, Overloaded, TooLarge
from ..metrics import Metrics
from ..tracing import Tracing
from .deps import ServiceState, serving_of
from .handlers import error_response

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = b"x-request-id"
_CLIENT_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._-]{1,64}$")  # echoed back only when harmless


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, max_request_bytes: int, max_concurrent_requests: int, metrics: Metrics,
                 route_paths: frozenset[str], draining: Callable[[], bool] = lambda: False,
                 tracing: Tracing | None = None, state: ServiceState | None = None,
                 direct: dict[str, APIRoute] | None = None):
        self.app = app
        self.state = state
        self.direct = direct or {}  # path -> a POST route whose endpoint is called without the framework
        self.tracing = tracing  # None: no traces (the default), and no cost
        self.draining = draining
        self.max_request_bytes = max_request_bytes
        self.max_concurrent_requests = max_concurrent_requests
        self.metrics = metrics
        self.route_paths = route_paths
        self.in_flight = 0  # /v1 requests admitted and not yet answered
        # Request ids: 32 hex digits (as uuid4().hex), a random prefix per process and a counter:
        # unique across replicas and restarts, without a system call per request.
        self.id_prefix, self.ids = os.urandom(8).hex(), itertools.count()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope["headers"])
        client_id = headers.get(REQUEST_ID_HEADER, b"")
        request_id = client_id.decode() if _CLIENT_REQUEST_ID.match(client_id) else f"{self.id_prefix}{next(self.ids):016x}"
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["arrived_at"] = asyncio.get_running_loop().time()
        path = scope["path"]
        route = path if path in self.route_paths else "other"  # bounded label values
        status: int | None = None  # None until the response starts
        if self.tracing is not None and path.startswith("/v1/"):
            trace = self.tracing.request(scope["method"], route, request_id)
            if trace is not None:  # None: not sampled, and then no cost further on
                state["trace"] = trace

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER, request_id.encode())]
                if self.draining():  # the client's next request opens a new connection, to a replica that stays
                    message["headers"].append((b"connection", b"close"))
            await send(message)

        admitted = False
        try:
            # Refused before the body is read; counted once it is read, so a client that stalls
            # mid-body holds no slot (the read timeout of service/server.py drops it).
            if path.startswith("/v1/") and self.in_flight >= self.max_concurrent_requests:
                raise Overloaded(f"{self.in_flight} requests are in flight; the limit is "
                                 f"max_concurrent_requests={self.max_concurrent_requests}")
            body = await self._limited_body(headers, receive)
            if body is None:  # the client went away (or was dropped) before sending the whole body
                status = 499  # nginx's "client closed request": nothing is sent, nothing failed here
                return
            if path.startswith("/v1/"):
                admitted = True
                self.in_flight += 1
            direct = self.direct.get(path) if scope["method"] == "POST" else None
            if direct is None:
                await self.app(scope, body, send_with_id)
            else:
                await self._direct(direct, scope, body, send_with_id)
        except (Overloaded, TooLarge) as exc:
            await error_response(exc, request_id, self.metrics)(scope, receive, send_with_id)
        except Exception:
            # Routes turn every domain error into a response; reaching here is a bug. Answer in
            # the one error shape (when nothing was sent yet) and keep serving.
            log.exception("unhandled error in %s %s (request %s)", scope["method"], path, request_id)
            if status is None:
                error = InternalError(f"internal error; quote request id {request_id}")
                await error_response(error, request_id, self.metrics)(scope, receive, send_with_id)
        finally:
            if admitted:
                self.in_flight -= 1
            model = state.get("model", "")  # set by a serving route once it knows the model
            self.metrics.requests.labels(route=route, status=str(status or 500), model=model).inc()
            self.metrics.request_duration.labels(route=route, model=model).observe(time.perf_counter() - started)
            if "trace" in state:
                state["trace"].end(status or 500, model)

    async def _direct(self, route: APIRoute, scope: Scope, receive: Receive, send: Send) -> None:
        """A serving route's endpoint called as FastAPI would call it (the route in the scope, as
        routing puts it there); its domain errors answered as the app's exception handlers answer them."""
        assert self.state is not None
        scope["route"] = route
        request = Request(scope, receive)
        try:
            response = await route.endpoint(request, serving_of(request, self.state))
        except AtomError as exc:
            state = scope["state"]
            response = error_response(exc, state["request_id"], self.metrics, state.get("model", ""))
        await response(scope, receive, send)

    async def _limited_body(self, headers: dict[bytes, bytes], receive: Receive) -> Receive | None:
        """Read the whole body (at most max_request_bytes) and hand it on; raise TooLarge past it.

        None when the client disconnected first.

        Content-Length is checked first so a declared-too-large body is never read; the actual
        size is checked too, for chunked bodies and lying headers.
        """
        limit = self.max_request_bytes
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise TooLarge(f"the request body has {int(declared)} bytes; the limit is max_request_bytes={limit}")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"the request body has more than {limit} bytes; the limit is max_request_bytes={limit}")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return _replay([{"type": "http.request", "body": b"".join(chunks), "more_body": False}], receive)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    async def replay() -> Message:
        return messages.pop(0) if messages else await receive()

    return replay
