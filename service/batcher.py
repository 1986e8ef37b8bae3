"""Dynamic batching: worker tasks own the queue and feed the runtime, one batch each at a time.

Requests put items in the queue (one future per item) and await their futures. A free worker
waits until the queue holds a full batch (`max_batch_items`, or `max_batch_components` padded
components) or the oldest item has waited `max_wait_ms`, then takes the waiting items (at most
`max_round_items`, oldest first, so a long queue is served in order rather than in one long
round that every newcomer waits behind), sorts them by length and cuts them into batches within
both budgets. A batch also stops growing when padding would pass `max_batch_padding` (padded
components over real ones, minus one): on a CPU the model's cost follows the components it
computes, padding included, so four batches of similar lengths beat one batch of mixed ones
(on a GPU, where the batch is what costs, the padding bound is lifted). The round's batches go
to the `workers` (each runs one batch at a time, in a thread of its own) in order, whichever is
free first; a new round is taken only once all of them have started, so items that arrive
meanwhile wait for the next round and nothing starves behind shorter items. With
`max_wait_ms=0` (the default) a round starts as soon as a worker is free: continuous
batching, where the batch size follows the load.

Failure rules: a full queue refuses a request at once (429); a request whose deadline passes
gets 504 and its items are skipped if not yet run; an exception in `run_batch` fails every item
of that batch, and the worker goes on with the next.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from .errors import AtomError, DeadlineExceeded, InferenceFailed, NotReady, QueueFull
from .metrics import ModelMetrics
from .priority import Priority, priority_this_thread

log = logging.getLogger(__name__)


class Sized(Protocol):
    @property
    def length(self) -> int: ...  # components of the item, i.e. its padded cost


ItemT = TypeVar("ItemT", bound=Sized)
ResultT = TypeVar("ResultT")


@dataclass(frozen=True)
class BatchingConfig:
    max_batch_items: int = 32
    max_batch_components: int = 8192
    max_wait_ms: float = 0.0
    max_queue_items: int = 2048
    max_batch_padding: float = float("inf")  # padded components / real components - 1
    max_round_items: int = 128  # items taken from the queue per round, oldest first

    def described(self) -> dict[str, float | int | None]:
        """The settings as JSON can carry them: an unbounded padding is null."""
        out = dataclasses.asdict(self)
        out["max_batch_padding"] = None if math.isinf(self.max_batch_padding) else self.max_batch_padding
        return out


@dataclass(eq=False)
class _Entry:
    item: Any
    length: int
    future: asyncio.Future
    enqueued_at: float  # loop.time()
    deadline: float  # loop.time()


@dataclass
class _Pool:
    """Items waiting for the next round, in arrival order, with what `full` needs."""

    entries: list[_Entry] = field(default_factory=list)
    longest: int = 0

    def add(self, entries: Sequence[_Entry]) -> None:
        self.entries.extend(entries)
        self.longest = max([self.longest, *(e.length for e in entries)])

    def take(self, limit: int) -> list[_Entry]:
        """The `limit` oldest entries; the rest wait for the next round."""
        entries, self.entries = self.entries[:limit], self.entries[limit:]
        self.longest = max((e.length for e in self.entries), default=0)
        return entries


def cut_batches(entries: Sequence[_Entry], max_items: int, max_components: int,
                max_padding: float = float("inf")) -> list[list[_Entry]]:
    """Sort by length and cut greedily: each batch keeps items x longest <= max_components and
    items x longest <= (1 + max_padding) x its real components.

    A single item longer than the budget still forms a batch of one.
    """
    batches: list[list[_Entry]] = []
    current: list[_Entry] = []
    real = 0
    for entry in sorted(entries, key=lambda e: e.length):  # stable: arrival order within a length
        longest = entry.length  # sorted, so the newcomer is the longest
        padded = (len(current) + 1) * longest
        if current and (len(current) + 1 > max_items or padded > max_components
                        or padded > (1.0 + max_padding) * (real + longest)):
            batches.append(current)
            current, real = [], 0
        current.append(entry)
        real += longest
    if current:
        batches.append(current)
    return batches


class Batcher(Generic[ItemT, ResultT]):
    def __init__(
        self,
        run_batch: Callable[[list[ItemT]], list[ResultT]],
        config: BatchingConfig,
        metrics: ModelMetrics | None = None,
        thread_priority: Priority = 0,
        workers: int = 1,
    ):
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        self._run_batch = run_batch
        self.config = config
        self.metrics = metrics
        self.workers = workers
        self._pool = _Pool()
        self._ready: deque[list[_Entry]] = deque()  # batches cut from a round, not yet started
        self._queued = 0  # accepted and not yet in a running batch (the bounded quantity)
        self._wakeup = asyncio.Event()
        self._closing = False
        self._tasks: list[asyncio.Task] = []
        # A thread per worker: `workers` batches run at once (run_batch must allow that: an ONNX
        # Runtime session does). On a small CPU two batches on one intra-op thread each beat one
        # batch on two: benchmarks/results/inference_workers.md.
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="atom-inference",
                                            initializer=priority_this_thread if thread_priority else None,
                                            initargs=(thread_priority,) if thread_priority else ())

    @property
    def queued(self) -> int:
        return self._queued

    @property
    def running(self) -> bool:
        return any(not task.done() for task in self._tasks) and not self._closing

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._work(), name=f"atom-batcher-{i}") for i in range(self.workers)]

    async def submit(self, items: Sequence[ItemT], deadline: float) -> list[ResultT]:
        """Queue the items of one request and wait for their results, in order.

        `deadline` is in `loop.time()` seconds. Raises QueueFull, NotReady, DeadlineExceeded,
        or the batch's error.
        """
        if not self.running:
            raise NotReady("the service is shutting down" if self._closing else "the batcher is not running")
        if self._queued + len(items) > self.config.max_queue_items:
            raise QueueFull(
                f"the queue holds {self._queued} items and this request adds {len(items)}; "
                f"the limit is max_queue_items={self.config.max_queue_items}"
            )
        loop = asyncio.get_running_loop()
        now = loop.time()
        entries = [_Entry(item, item.length, loop.create_future(), now, deadline) for item in items]
        self._pool.add(entries)
        self._set_queued(self._queued + len(entries))
        self._wakeup.set()
        try:
            async with asyncio.timeout_at(deadline):
                return list(await asyncio.gather(*(e.future for e in entries)))
        except TimeoutError:
            raise DeadlineExceeded("the request deadline passed before its results were ready") from None
        finally:
            for entry in entries:  # the worker skips cancelled items that are still queued
                entry.future.cancel()

    async def stop(self, drain_timeout_s: float = 10.0) -> None:
        """Refuse new items, finish the queued ones (up to drain_timeout_s), then stop."""
        self._closing = True
        self._wakeup.set()
        if self._tasks:
            workers = asyncio.gather(*self._tasks, return_exceptions=True)
            try:
                await asyncio.wait_for(asyncio.shield(workers), drain_timeout_s)
            except TimeoutError:
                log.warning("batcher did not drain in %.1f s; failing what is left", drain_timeout_s)
                for task in self._tasks:
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)
        left = [entry for batch in self._ready for entry in batch] + self._pool.take(len(self._pool.entries))
        self._ready.clear()
        self._set_queued(self._queued - len(left))
        self._fail(left, NotReady("the service is shutting down"))
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ---- the workers -------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            if not self._ready:
                await self._wait_for_round()
                if not self._ready and self._pool.entries:  # another worker may have taken it meanwhile
                    self._take_round()
            if not self._ready:
                if self._closing and not self._pool.entries:
                    return
                continue
            batch = self._ready.popleft()
            try:
                await self._run(batch)
            except asyncio.CancelledError:
                # A shutdown that could not drain: this batch's requests are told so at once
                # (stop() fails what is still queued).
                self._fail(batch, NotReady("the service is shutting down"))
                raise
            except Exception:
                # A bug here, not in the model (run_batch's errors are handled in _run): fail this
                # batch and the rest of its round (all that is still ready) rather than leave their
                # requests waiting for their deadline, and go on with later requests.
                rest = [entry for later in self._ready for entry in later]
                self._ready.clear()
                self._set_queued(self._queued - len(rest))  # _run already counted `batch` out
                self._fail(batch + rest, InferenceFailed("the batcher failed"))
                log.exception("batcher round failed")

    def _take_round(self) -> None:
        entries = self._pool.take(self.config.max_round_items)
        if self.metrics is not None:
            self.metrics.round_items.observe(len(entries))
        config = self.config
        self._ready.extend(cut_batches(entries, config.max_batch_items, config.max_batch_components,
                                       config.max_batch_padding))
        if self.workers > 1:
            self._wakeup.set()  # the other workers: batches are ready

    def _full(self) -> bool:
        count = len(self._pool.entries)
        return count >= self.config.max_batch_items or count * self._pool.longest >= self.config.max_batch_components

    async def _wait_for_round(self) -> None:
        while not self._pool.entries and not self._ready and not self._closing:
            self._wakeup.clear()
            await self._wakeup.wait()
        if not self._pool.entries or self._ready:  # nothing to wait for, or batches to run now
            return
        loop = asyncio.get_running_loop()
        flush_at = self._pool.entries[0].enqueued_at + self.config.max_wait_ms / 1000.0
        while not self._full() and not self._closing:
            if self._ready or not self._pool.entries:  # another worker took the round meanwhile
                return
            remaining = flush_at - loop.time()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    async def _run(self, batch: list[_Entry]) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._set_queued(self._queued - len(batch))
        # Cancelled: its request gave up. Expired: its request is about to get 504; leave the
        # future alone (the request's own timeout cancels it) and spend no compute on it.
        live = [e for e in batch if not e.future.done() and e.deadline > now]
        if not live:
            return
        if self.metrics is not None:
            for entry in live:
                self.metrics.queue_wait.observe(now - entry.enqueued_at)
            self.metrics.batch_items.observe(len(live))
            self.metrics.batch_padded_components.observe(len(live) * max(e.length for e in live))
        started = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._executor, self._run_batch, [e.item for e in live])
            if len(results) != len(live):
                raise RuntimeError(f"run_batch returned {len(results)} results for {len(live)} items")
        except Exception as exc:
            log.exception("batch of %d items failed after %.3f s", len(live), time.perf_counter() - started)
            failure = f"inference failed for this batch ({type(exc).__name__})"
            self._fail(live, exc if isinstance(exc, AtomError) else InferenceFailed(failure))
            return
        for entry, result in zip(live, results):
            if not entry.future.done():
                entry.future.set_result(result)

    @staticmethod
    def _fail(entries: Sequence[_Entry], error: AtomError) -> None:
        for entry in entries:
            if not entry.future.done():
                entry.future.set_exception(error)

    def _set_queued(self, value: int) -> None:
        self._queued = value
        if self.metrics is not None:
            self.metrics.queue_items.set(value)
