"""uvicorn, hardened for a load balancer: a drain period on SIGTERM, bounded connections, read timeouts.

- **Drain.** On SIGTERM the app's /readyz turns 503 at once while every request is still served
  for `drain_ms`, so the load balancer stops sending; then uvicorn stops accepting, lets in-flight
  requests finish, runs the lifespan shutdown (the batcher finishes its queue) and the process
  exits 0. A second SIGTERM, or SIGINT, skips what is left of the drain.
- **Read timeout.** A connection must deliver each request, headers and body, within
  `read_timeout_ms` of its first byte being awaited; a stalled one is closed. (uvicorn itself
  bounds only the idle time after a response, so a client that stops mid-header is kept forever.)
- **Connection bound.** Past `max_connections` open connections, the one that has waited longest
  for its request to arrive is closed to make room (or the newcomer, when every other is busy in
  the app): stalled sockets cannot crowd out clients that send their requests at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from types import FrameType

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)


def http_protocol(name: str) -> type[asyncio.Protocol]:
    """uvicorn's HTTP/1.1 implementation: "httptools" (C parser) or "h11" (pure Python); "auto"
    takes httptools when it is installed. Both keep the attributes the guard below relies on."""
    if name in ("auto", "httptools"):
        try:
            from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

            return HttpToolsProtocol
        except ImportError:
            if name == "httptools":
                raise
    return H11Protocol


def guarded_protocol(max_connections: int, read_timeout_s: float, http: str = "auto") -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol with a per-request read deadline and a bound on open connections."""
    base: type = http_protocol(http)

    class GuardedProtocol(base):  # type: ignore[valid-type, misc]
        _read_timer: asyncio.TimerHandle | None = None
        _waiting_since = 0.0

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._await_request()
            if len(self.connections) > max_connections:
                self._make_room()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._await_request()  # the next request on a kept-alive connection has its own deadline

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_timer()
            super().connection_lost(exc)

        def receiving(self) -> bool:
            """Waiting for a request, or for the rest of its body: not yet handed over whole."""
            cycle = self.cycle
            return cycle is None or cycle.response_complete or cycle.more_body

        def _await_request(self) -> None:
            self._cancel_timer()
            self._waiting_since = time.monotonic()
            self._read_timer = self.loop.call_later(read_timeout_s, self._read_timed_out)

        def _cancel_timer(self) -> None:
            if self._read_timer is not None:
                self._read_timer.cancel()
                self._read_timer = None

        def _read_timed_out(self) -> None:
            self._read_timer = None
            if self.receiving():
                self._drop(f"request not received within read_timeout_ms={read_timeout_s * 1000:g}")

        def _make_room(self) -> None:
            waiting = [c for c in self.connections if isinstance(c, GuardedProtocol) and c is not self
                       and not c.transport.is_closing() and c.receiving()]
            victim = min(waiting, key=lambda c: c._waiting_since, default=self)
            victim._drop(f"more than max_connections={max_connections} open connections")

        def _drop(self, why: str) -> None:
            log.debug("closing connection from %s: %s", self.client, why)
            self._cancel_timer()
            self.transport.close()

    return GuardedProtocol


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a drain period between SIGTERM and the graceful shutdown; exits 0."""

    def __init__(self, config: uvicorn.Config, *, drain_s: float, on_drain: Callable[[], None]):
        super().__init__(config)
        self.drain_s = drain_s
        self.on_drain = on_drain
        self.drain_started: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM:
            # Not recorded as a captured signal: uvicorn would re-raise it after the shutdown and
            # the process would die "killed by SIGTERM" instead of exiting 0 after a clean stop.
            if self.drain_started is None and self.drain_s > 0 and not self.should_exit:
                self.drain_started = time.monotonic()
                self.on_drain()
                log.info("SIGTERM: draining for %.1f s (/readyz says 503, requests are still served)", self.drain_s)
            else:
                self.should_exit = True
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self.drain_started is not None and time.monotonic() - self.drain_started >= self.drain_s:
            log.info("drain period over: finishing in-flight requests and stopping")
            return True
        return await super().on_tick(counter)
