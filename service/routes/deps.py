"""What a route can depend on: the service state, and for /v1/* the checked, ready serving parts.

One dependency per serving request (`Serving`: API key, readiness, deadline) rather than a
chain of small ones: each resolved dependency costs FastAPI tens of microseconds per request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import re
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel, ConfigDict, ValidationError

from ..batcher import Batcher
from ..config import Settings
from ..errors import InvalidInput, ModelNotFound, NotReady, QueueFull, Unauthorized
from ..metrics import Metrics
from ..runtime import Item, ItemResult, Runtime
from ..schemas import RequestModels
from ..served import Served
from ..tracing import RequestTrace

if TYPE_CHECKING:
    from ..banks import BankReloads

T = TypeVar("T")


@dataclass
class ServiceState:
    """One app's state; the lifespan fills in the served models, then the checks."""

    settings: Settings
    metrics: Metrics
    served: dict[str, Served] = field(default_factory=dict)  # by name, in the order given; the first is the default
    # Each model's threads that parse and tokenize its request bodies: a flood of one model's
    # requests never queues another model's bodies behind its own (benchmarks/several_models.py).
    prepare_pools: dict[str, ThreadPoolExecutor] = field(default_factory=dict)
    reloads: BankReloads | None = None  # the banks' reloads (SIGHUP, the reload route), set once started
    # start-up steps done so far, set by the lifespan
    started: dict[str, bool] = field(
        default_factory=lambda: dict.fromkeys(("bundle_loaded", "bank_loaded", "session_warmed_up"), False)
    )
    draining: bool = False  # SIGTERM came: /readyz says 503, requests are still served
    closing: bool = False  # the drain is over (or SIGINT): /v1 requests get 503 while the server stops
    stopping: bool = False  # the lifespan's shutdown began: requests are refused

    @property
    def default(self) -> Served | None:
        return next(iter(self.served.values()), None)

    @property
    def runtime(self) -> Runtime | None:
        """The default model's runtime (None until it is started)."""
        return self.default.runtime if self.default else None

    @property
    def batcher(self) -> Batcher[Item, ItemResult] | None:
        return self.default.batcher if self.default else None

    @property
    def models(self) -> RequestModels | None:
        return self.default.models if self.default else None

    def checks(self) -> dict[str, bool]:
        """What /readyz reports; ready = all true. The batchers are asked live, not remembered."""
        running = bool(self.served) and all(served.batcher.running for served in self.served.values())
        accepting = not (self.stopping or self.draining or self.closing)
        return {**self.started, "batcher_running": running, "accepting_requests": accepting}

    def model_checks(self) -> dict[str, dict[str, bool]]:
        """Each started model's own readiness, so /readyz says which one is not ready."""
        return {name: {"batcher_running": served.batcher.running} for name, served in self.served.items()}

    @property
    def ready(self) -> bool:
        return all(self.checks().values())

    @property
    def serving(self) -> bool:
        """Requests are answered: ready, or draining (ready in all but the name)."""
        running = bool(self.served) and all(served.batcher.running for served in self.served.values())
        return all(self.started.values()) and running and not self.stopping


class _ModelField(BaseModel):
    """Only a request body's `model`: read first when several models are served, to pick whose
    request models parse the rest."""

    model_config = ConfigDict(extra="ignore", strict=True)
    model: str | None = None


ROUTE_ON_LOOP_BYTES = 64 * 1024  # bodies whose `model` is read on the event loop (Ready.routed)


@dataclass(frozen=True)
class Ready:
    """The parts a serving route uses, handed out only to an authorized request on a ready service:
    the model it runs (the default one until `route` or `named` picks the one it names)."""

    settings: Settings
    served: Served
    choices: Mapping[str, Served]  # every served model by name
    prepare_pools: Mapping[str, ThreadPoolExecutor]  # by model name (ServiceState.prepare_pools)
    deadline: float  # loop.time() seconds: request arrival + request_timeout_ms
    scope_state: dict[str, Any]  # the request's scope state: the model chosen is recorded there (metrics)
    trace: RequestTrace | None = None  # this request's trace (service/tracing.py), when tracing is on

    @property
    def runtime(self) -> Runtime:
        return self.served.runtime

    @property
    def prepare_pool(self) -> ThreadPoolExecutor:
        """The prepare threads of the model this request is routed to (the default one until then)."""
        return self.prepare_pools[self.served.name]

    @property
    def batcher(self) -> Batcher[Item, ItemResult]:
        return self.served.batcher

    @property
    def models(self) -> RequestModels:
        return self.served.models

    def _names(self) -> str:
        return ", ".join(repr(name) for name in self.choices)

    def check_model(self, requested: str | None) -> None:
        """A request naming a model must name one served (OpenAI's `model`); optional with one model."""
        if requested is not None and requested != self.served.name:
            served = "serves " + self._names() if len(self.choices) > 1 else f"serves {self.served.name!r}"
            raise ModelNotFound(f"model {requested!r} is not served here; this service {served} "
                                f"(GET /v1/models lists {'them' if len(self.choices) > 1 else 'it'})")

    def named(self, name: str | None) -> "Ready":
        """The parts of the model `name` (None: the default one); 404 naming the served ones."""
        if name is None or name == self.served.name:
            self.scope_state["model"] = self.served.name
            return self
        chosen = self.choices.get(name)
        if chosen is None:
            self.check_model(name)
        self.scope_state["model"] = name
        return dataclasses.replace(self, served=chosen)

    def route(self, raw: bytes) -> "Ready":
        """The parts of the model a request body names (`routed`: before the body is parsed by that
        model's request models). With one model served: itself (its `model` is optional and
        checked after parsing). With several, `model` is required; the chosen model's queue is checked."""
        if len(self.choices) == 1:
            return self
        try:
            name = _ModelField.model_validate_json(raw).model
        except ValidationError as exc:
            if exc.errors()[0]["loc"][:1] != ("model",):  # not JSON, or not an object: the parser says so
                return self
            raise InvalidInput("model: Input should be a valid string") from None
        if name is None:
            raise InvalidInput(f"model: required when several models are served ({self._names()}); "
                               "GET /v1/models lists them")
        chosen = self.named(name)
        chosen.refuse_if_queue_full()
        return chosen

    async def routed(self, raw: bytes) -> "Ready":
        """`route(raw)`, on the event loop for a body of up to ROUTE_ON_LOOP_BYTES (reading its `model`
        takes microseconds there, and a request for a model whose queue is full is refused without a
        hand-off to a prepare thread: a flood of one model's refusals costs the others little), in a
        prepare thread for a larger one. With one model served: itself, at no cost."""
        if len(self.choices) == 1:
            return self
        if len(raw) <= ROUTE_ON_LOOP_BYTES:
            return self.route(raw)
        return await self.off_loop(self.route, raw)

    def refuse_before_reading(self) -> None:
        """429 before the body is read when one model is served and its queue is full. With several,
        the body names the model first: `route` then checks that model's queue, so one model's
        full queue never refuses another's requests."""
        if len(self.choices) == 1:
            self.refuse_if_queue_full()

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
    return serving_of(request, request.app.state.atom)


def serving_of(request: Request, state: ServiceState) -> Ready:
    """A serving route's parts (the `Serving` dependency; the middleware's direct routes call it
    themselves): the API key checked, the service ready, the query strict."""
    check_api_key(request, state.settings)  # first: an unauthorized caller learns nothing else
    if state.stopping or state.closing:
        raise NotReady("the service is shutting down")
    default = state.default
    if not state.serving or default is None:
        raise NotReady("the model is not loaded yet")
    check_query(request)  # after the key and readiness, the order FastAPI's own validation has
    assert state.prepare_pools, "set with the models"
    scope_state = request.scope.setdefault("state", {})
    arrived = scope_state.get("arrived_at", asyncio.get_running_loop().time())
    if len(state.served) == 1:  # the metrics' model label; with several, set once the request names one
        scope_state["model"] = default.name
    return Ready(state.settings, default, state.served, state.prepare_pools, arrived + state.settings.request_timeout_s,
                 scope_state, scope_state.get("trace"))


Serving = Annotated[Ready, Depends(get_serving)]
