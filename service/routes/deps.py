"""What a route can depend on: the service state, and for /v1/* the checked, ready serving parts.

One dependency per serving request (`Serving`: API key, readiness, deadline) rather than a
chain of small ones: each resolved dependency costs FastAPI tens of microseconds per request.
"""

from __future__ import annotations

import asyncio
import hmac
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated, TypeVar

from fastapi import Depends, Request

from ..batcher import Batcher
from ..config import Settings
from ..errors import InvalidInput, ModelNotFound, NotReady, QueueFull, Unauthorized
from ..metrics import Metrics
from ..runtime import Item, ItemResult, Runtime
from ..schemas import RequestModels

T = TypeVar("T")


@dataclass
class ServiceState:
    """One app's state; the lifespan fills in runtime and batcher, then the checks."""

    settings: Settings
    metrics: Metrics
    runtime: Runtime | None = None
    batcher: Batcher[Item, ItemResult] | None = None
    models: RequestModels | None = None  # built from the bundle once it is loaded
    prepare_pool: ThreadPoolExecutor | None = None  # parses and tokenizes request bodies
    # start-up steps done so far, set by the lifespan
    started: dict[str, bool] = field(
        default_factory=lambda: dict.fromkeys(("bundle_loaded", "bank_loaded", "session_warmed_up"), False)
    )
    draining: bool = False  # SIGTERM came: /readyz says 503, requests are still served
    closing: bool = False  # the drain is over (or SIGINT): /v1 requests get 503 while the server stops
    stopping: bool = False  # the lifespan's shutdown began: requests are refused

    def checks(self) -> dict[str, bool]:
        """What /readyz reports; ready = all true. The batcher is asked live, not remembered."""
        running = self.batcher is not None and self.batcher.running
        accepting = not (self.stopping or self.draining or self.closing)
        return {**self.started, "batcher_running": running, "accepting_requests": accepting}

    @property
    def ready(self) -> bool:
        return all(self.checks().values())

    @property
    def serving(self) -> bool:
        """Requests are answered: ready, or draining (ready in all but the name)."""
        running = self.batcher is not None and self.batcher.running
        return all(self.started.values()) and running and not self.stopping


@dataclass(frozen=True)
class Ready:
    """The parts a serving route uses, handed out only to an authorized request on a ready service."""

    settings: Settings
    runtime: Runtime
    batcher: Batcher[Item, ItemResult]
    models: RequestModels
    prepare_pool: ThreadPoolExecutor
    deadline: float  # loop.time() seconds: request arrival + request_timeout_ms

    def check_model(self, requested: str | None) -> None:
        """A request naming a model must name the one served (OpenAI's `model`; optional here)."""
        served = self.runtime.manifest.name
        if requested is not None and requested != served:
            raise ModelNotFound(f"model {requested!r} is not served here; this service serves {served!r} "
                                "(GET /v1/models lists it)")

    def refuse_if_queue_full(self) -> None:
        """429 before the body is parsed: a full queue would refuse the items anyway."""
        queued, limit = self.batcher.queued, self.settings.max_queue_items
        if queued >= limit:
            raise QueueFull(f"the queue holds {queued} items; the limit is max_queue_items={limit}")

    async def off_loop(self, work: Callable[..., T], *args: object) -> T:
        """Run CPU work (parsing, tokenizing) in the prepare threads, so the event loop stays free."""
        return await asyncio.get_running_loop().run_in_executor(self.prepare_pool, work, *args)


async def get_state(request: Request) -> ServiceState:
    return request.app.state.atom


State = Annotated[ServiceState, Depends(get_state)]


def check_api_key(request: Request, settings: Settings) -> None:
    """When an API key is configured, /v1/* needs `Authorization: Bearer KEY` (what OpenAI clients send)."""
    expected = settings.api_key
    if expected is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if not token:
        raise Unauthorized("missing API key: send the header `Authorization: Bearer KEY`")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.get_secret_value().encode()):
        raise Unauthorized("invalid API key")


_INTEGER = re.compile(r"-?[0-9]+")
# The Python types a query parameter may have; check_query knows how each one is written.
QUERY_TYPES = (int, str)


def query_spec(route: object) -> tuple[tuple[str, type], ...]:
    """(name, type) of the query parameters a route declares, its dependencies' included; kept on the route."""
    spec = getattr(route, "_atom_query_spec", None)
    if spec is None:
        params, pending = [], [getattr(route, "dependant", None)]
        while pending:
            dependant = pending.pop()
            if dependant is not None:
                params += [(param.alias, param.field_info.annotation) for param in dependant.query_params]
                pending += dependant.dependencies
        spec = tuple(dict.fromkeys(params))
        setattr(route, "_atom_query_spec", spec)
    return spec


def check_query(request: Request) -> None:
    """Query parameters are validated strictly, like the JSON bodies: one value each, and an
    integer written in digits. FastAPI on its own takes the last of a repeated parameter (`limit=true&limit=3` is 3)
    and converts `5.0` to 5; the rest (range, length) it checks itself, after this, in the same
    error shape. Parameters a route does not declare are ignored, as FastAPI does."""
    if not request.scope.get("query_string"):
        return  # nearly every request: nothing to look at
    given = request.query_params
    for name, kind in query_spec(request.scope.get("route")):
        values = given.getlist(name)
        if len(values) > 1:
            raise InvalidInput(f"query.{name}: given {len(values)} times; it takes one value")
        if values and kind is int and not _INTEGER.fullmatch(values[0]):
            raise InvalidInput(f"query.{name}: Input should be a valid integer, not {values[0]!r}")


async def get_serving(request: Request) -> Ready:
    state: ServiceState = request.app.state.atom
    check_api_key(request, state.settings)  # first: an unauthorized caller learns nothing else
    if state.stopping or state.closing:
        raise NotReady("the service is shutting down")
    if not state.serving or state.runtime is None or state.batcher is None or state.models is None:
        raise NotReady("the model is not loaded yet")
    check_query(request)  # after the key and readiness, the order FastAPI's own validation has
    assert state.prepare_pool is not None  # set with the models
    arrived = request.scope.get("state", {}).get("arrived_at", asyncio.get_running_loop().time())
    return Ready(state.settings, state.runtime, state.batcher, state.models, state.prepare_pool,
                 arrived + state.settings.request_timeout_s)


Serving = Annotated[Ready, Depends(get_serving)]
