"""uvicorn, hardened for a load balancer: a drain period on SIGTERM, bounded connections, read timeouts.

- **Drain.** On SIGTERM the app's /readyz turns 503 at once while every request is still served
  for `drain_ms`, so the load balancer stops sending; then uvicorn stops accepting, lets in-flight
  requests finish, runs the lifespan shutdown (the batcher finishes its queue) and the process
  exits 0. A second SIGTERM, or SIGINT, skips what is left of the drain.
- **No request is dropped unanswered at the stop.** Closing a listening socket resets the
  connections the kernel has already accepted for it (their clients have sent a request), and
  closing a connection that has not yet been read resets it too. So the stop first has the
  kernel drop new SYNs (a client's connect then fails: nothing was sent), accepts what is already
  queued, closes the listener, then gives connections without a request a moment to send one:
  each request gets a whole response, a 503 `not_ready` when it came after the drain, with
  `Connection: close`. See `DrainingServer.shutdown`.
- **Read timeout.** A connection must deliver each request, headers and body, within
  `read_timeout_ms` of its first byte being awaited; a stalled one is closed. (uvicorn itself
  bounds only the idle time after a response, so a client that stops mid-header is kept forever.)
- **Connection bound.** Past `max_connections` open connections, the one that has waited longest
  for its request to arrive is closed to make room (or the newcomer, when every other is busy in
  the app): stalled sockets cannot crowd out clients that send their requests at once.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import socket
import struct
import sys
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


SO_ATTACH_FILTER = 26  # <asm-generic/socket.h>; the same number on every Linux architecture Python runs on
# A classic BPF socket filter for a listening TCP socket. The kernel runs it on each packet for
# the socket with the TCP header at offset 0: load the flags byte, drop a SYN without ACK (a new
# connection: the client retransmits it and, once the listener is closed, gets a refusal), pass
# everything else (the last ACK of a handshake already under way, which puts that connection in
# the accept queue). Accepted connections inherit the filter; it passes all their packets.
_DROP_NEW_SYNS = (
    (0x30, 0, 0, 13),  # ldb [13]: the TCP flags
    (0x54, 0, 0, 0x12),  # and #(SYN|ACK)
    (0x15, 0, 1, 0x02),  # jeq #SYN: the next instruction, else skip it
    (0x06, 0, 0, 0),  # ret #0: drop
    (0x06, 0, 0, 0xFFFFFFFF),  # ret #-1: keep the whole packet
)
ACCEPT_GRACE_S = 1.0  # at most this long for the kernel's accept queue to empty once new SYNs are dropped
HANDSHAKE_GRACE_S = 0.05  # handshakes under way when SYNs stop being taken: time for their last ACK
IDLE_GRACE_S = 1.0  # at most this long for connections that have not sent a request yet to send one


def _tcp_listener(sock: socket.socket) -> socket.socket | None:
    """A duplicate of a listening TCP socket's descriptor (close it after use); None where the
    kernel calls below do not apply (not Linux, a Unix socket)."""
    if sys.platform != "linux" or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    return socket.socket(fileno=os.dup(sock.fileno()))


def drop_new_syns(sock: socket.socket) -> bool:
    """Have the kernel drop new connection attempts to this listening socket; False where it cannot."""
    try:
        dup = _tcp_listener(sock)
        if dup is None:
            return False
        with dup:
            code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *op) for op in _DROP_NEW_SYNS))
            dup.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER,
                           struct.pack("HP", len(_DROP_NEW_SYNS), ctypes.addressof(code)))
        return True
    except OSError as exc:
        log.debug("cannot filter new connections on %s: %s", sock, exc)
        return False


def accept_queue(sock: socket.socket) -> int:
    """Connections the kernel has completed for this listening socket and nobody has accepted yet
    (Linux reports it as tcpi_unacked of a listener's TCP_INFO); 0 where that cannot be read."""
    try:
        dup = _tcp_listener(sock)
        if dup is None:
            return 0
        with dup:
            return struct.unpack_from("I", dup.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 32), 24)[0]
    except OSError:
        return 0


def awaiting_request(connection: asyncio.Protocol) -> bool:
    """Open, and no request on it has begun since it was accepted or its last response."""
    transport = getattr(connection, "transport", None)
    cycle = getattr(connection, "cycle", None)
    return transport is not None and not transport.is_closing() and (cycle is None or cycle.response_complete)


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a drain period between SIGTERM and the graceful shutdown, and a stop
    that answers every request it has taken in; exits 0."""

    def __init__(self, config: uvicorn.Config, *, drain_s: float, on_drain: Callable[[], None],
                 on_close: Callable[[], None] = lambda: None):
        super().__init__(config)
        self.drain_s = drain_s
        self.on_drain = on_drain
        self.on_close = on_close  # from now on /v1 requests get 503 and every response closes its connection
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

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's graceful shutdown, preceded by a stop that loses no request already sent.

        uvicorn closes the listening sockets and then every connection without a request in
        progress. Both reset connections whose request is on its way: the kernel resets the
        connections still in the listener's accept queue, and a connection closed before its
        request was read is reset when the request arrives (5 of 87 requests sent in the last
        second of a drain, issue 22). So: requests from here on get 503 with `Connection:
        close` (`on_close`); the kernel drops new SYNs while what it has already queued is
        accepted; then the listener closes, and connections that have sent nothing yet get
        IDLE_GRACE_S to do so. A client connecting now is refused before it sends anything.
        """
        if not self.force_exit:
            self.on_close()
            await self._stop_accepting()
            deadline = time.monotonic() + IDLE_GRACE_S
            while (time.monotonic() < deadline and not self.force_exit
                   and any(awaiting_request(c) for c in self.server_state.connections)):
                await asyncio.sleep(0.01)
        await super().shutdown(sockets)

    async def _stop_accepting(self) -> None:
        listeners = [sock for server in self.servers for sock in (server.sockets or ())]
        filtered = [sock for sock in listeners if drop_new_syns(sock)]
        if filtered:
            await asyncio.sleep(HANDSHAKE_GRACE_S)
            deadline = time.monotonic() + ACCEPT_GRACE_S
            while any(accept_queue(sock) for sock in filtered) and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            # asyncio sets up an accepted connection in a task of its own, which fails if the
            # server is closed first: let those run.
            await asyncio.sleep(0.02)
        for server in self.servers:
            server.close()
