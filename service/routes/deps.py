"""What a route can depend on: the service state, and for /v1/* the checked, ready serving parts.

One dependency per serving request (`Serving`: API key, readiness, deadline) rather than a
chain of small ones: each resolved dependency costs FastAPI tens of microseconds per request.
"""

from __future__ import annotations

import asyncio
import hmac
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from ..batcher import Batcher
from ..config import Settings
from ..errors import NotReady, TooLarge, Unauthorized
from ..metrics import Metrics
from ..runtime import Item, ItemResult, Runtime


@dataclass
class ServiceState:
    """One app's state; the lifespan fills in runtime and batcher, then the checks."""

    settings: Settings
    metrics: Metrics
    runtime: Runtime | None = None
    batcher: Batcher[Item, ItemResult] | None = None
    # start-up steps done so far, set by the lifespan
    started: dict[str, bool] = field(
        default_factory=lambda: dict.fromkeys(("bundle_loaded", "bank_loaded", "session_warmed_up"), False)
    )
    stopping: bool = False

    def checks(self) -> dict[str, bool]:
        """What /readyz reports; ready = all true. The batcher is asked live, not remembered."""
        running = self.batcher is not None and self.batcher.running
        return {**self.started, "batcher_running": running, "accepting_requests": not self.stopping}

    @property
    def ready(self) -> bool:
        return all(self.checks().values())


@dataclass(frozen=True)
class Ready:
    """The parts a serving route uses, handed out only to an authorized request on a ready service."""

    settings: Settings
    runtime: Runtime
    batcher: Batcher[Item, ItemResult]
    deadline: float  # loop.time() seconds: request arrival + request_timeout_ms


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


async def get_serving(request: Request) -> Ready:
    state: ServiceState = request.app.state.atom
    check_api_key(request, state.settings)  # first: an unauthorized caller learns nothing else
    if state.stopping:
        raise NotReady("the service is shutting down")
    if not state.ready or state.runtime is None or state.batcher is None:
        raise NotReady("the model is not loaded yet")
    arrived = request.scope.get("state", {}).get("arrived_at", asyncio.get_running_loop().time())
    return Ready(state.settings, state.runtime, state.batcher, arrived + state.settings.request_timeout_s)


Serving = Annotated[Ready, Depends(get_serving)]


def check_input_count(count: int, limit: int, name: str) -> None:
    if count > limit:
        raise TooLarge(f"{name} has {count} items; the limit is max_inputs_per_request={limit}")
