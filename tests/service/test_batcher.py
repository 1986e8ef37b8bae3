"""The batcher with a fake runner: batching rules, failure isolation, overload and deadlines."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from service.batcher import Batcher, BatchingConfig, cut_batches
from service.errors import DeadlineExceeded, InferenceFailed, NotReady, QueueFull
from service.metrics import Metrics


@dataclass(frozen=True)
class FakeItem:
    value: int
    length: int = 1
    poison: bool = False


class FakeRunner:
    """Doubles each value; records every batch; can be slow or fail on a poisoned item."""

    def __init__(self, delay_s: float = 0.0):
        self.delay_s = delay_s
        self.batches: list[list[FakeItem]] = []
        self.lock = threading.Lock()

    def __call__(self, items: list[FakeItem]) -> list[int]:
        with self.lock:
            self.batches.append(list(items))
        if self.delay_s:
            time.sleep(self.delay_s)
        if any(item.poison for item in items):
            raise RuntimeError("poisoned batch")
        return [item.value * 2 for item in items]

    @property
    def seen(self) -> list[int]:
        return [item.value for batch in self.batches for item in batch]


def run(coroutine):
    return asyncio.run(coroutine)


async def started(runner, **config) -> Batcher:
    batcher = Batcher(runner, BatchingConfig(**config), Metrics().for_model("m"))
    batcher.start()
    return batcher


def deadline_in(seconds: float) -> float:
    return asyncio.get_running_loop().time() + seconds


def test_each_request_gets_its_own_results_in_order():
    async def main():
        runner = FakeRunner()
        batcher = await started(runner, max_batch_items=8, max_wait_ms=5)
        requests = [[FakeItem(100 * r + i, length=1 + (i * 7 + r) % 13) for i in range(r % 5 + 1)] for r in range(60)]
        results = await asyncio.gather(*(batcher.submit(items, deadline_in(10)) for items in requests))
        await batcher.stop()
        return runner, requests, results

    runner, requests, results = run(main())
    for items, result in zip(requests, results):
        assert result == [item.value * 2 for item in items]
    assert max(len(batch) for batch in runner.batches) <= 8
    assert len(runner.batches) < sum(map(len, requests))  # requests were batched together
    assert sorted(runner.seen) == sorted(item.value for items in requests for item in items)  # each ran once


def test_batches_respect_the_padded_component_budget_and_group_similar_lengths():
    async def main():
        runner = FakeRunner()
        # a long wait: everything below arrives in one round
        batcher = await started(runner, max_batch_items=100, max_batch_components=100, max_wait_ms=200)
        lengths = [1, 40, 2, 39, 3, 38, 4, 37, 50, 5, 120]
        await asyncio.gather(*(batcher.submit([FakeItem(i, length=n)], deadline_in(10)) for i, n in enumerate(lengths)))
        await batcher.stop()
        return runner

    runner = run(main())
    for batch in runner.batches:
        padded = len(batch) * max(item.length for item in batch)
        assert padded <= 100 or len(batch) == 1  # an item over the budget runs alone
    # sorted by length before cutting: each batch is a contiguous run of the sorted lengths
    flat = [item.length for batch in runner.batches for item in batch]
    assert flat == sorted(flat)
    assert [item.length for item in runner.batches[0]] == [1, 2, 3, 4, 5]


def lengths_of(batches) -> list[list[int]]:
    return [[entry.length for entry in batch] for batch in batches]


def test_a_batch_stops_growing_where_padding_would_pass_the_bound():
    entries = [SimpleNamespace(length=n) for n in (20, 5, 6, 5, 20, 5)]
    # 5,5,5 + 6 would pad 24 components for 21 real ones (> 1.1 x 21); 6 + 20 pads 40 for 26
    assert lengths_of(cut_batches(entries, 32, 8192, 0.1)) == [[5, 5, 5], [6], [20, 20]]
    assert lengths_of(cut_batches(entries, 32, 8192, 0.2)) == [[5, 5, 5, 6], [20, 20]]
    assert lengths_of(cut_batches(entries, 32, 8192)) == [[5, 5, 5, 6, 20, 20]]  # unbounded: one batch


@pytest.mark.parametrize("padding", [0.0, 0.1, 0.5])
def test_every_item_is_cut_into_exactly_one_batch_within_every_bound(padding):
    rng = random.Random(7)
    entries = [SimpleNamespace(length=rng.randint(1, 64), id=i) for i in range(300)]
    batches = cut_batches(entries, 16, 512, padding)
    assert sorted(entry.id for batch in batches for entry in batch) == list(range(300))
    for batch in batches:
        longest, real = max(e.length for e in batch), sum(e.length for e in batch)
        assert len(batch) <= 16 and len(batch) * longest <= 512
        assert len(batch) * longest <= (1 + padding) * real + 1e-9 or len(batch) == 1


def test_a_long_queue_is_served_oldest_first_in_rounds_of_at_most_max_round_items():
    async def main():
        runner = FakeRunner(delay_s=0.01)
        batcher = await started(runner, max_batch_items=4, max_round_items=8, max_wait_ms=100)
        # one request of 1 item, then 20 single-item requests queued behind it while it runs
        first = asyncio.ensure_future(batcher.submit([FakeItem(0, length=5)], deadline_in(10)))
        await asyncio.sleep(0.005)
        rest = [batcher.submit([FakeItem(i, length=1 + i % 3)], deadline_in(10)) for i in range(1, 21)]
        results = await asyncio.gather(first, *rest)
        await batcher.stop()
        return runner, results, batcher.metrics

    runner, results, metrics = run(main())
    assert results == [[2 * i] for i in range(21)]
    assert metrics.parent.registry.get_sample_value("atom_round_items_sum", {"model": "m"}) == 21
    assert metrics.parent.registry.get_sample_value("atom_round_items_count", {"model": "m"}) == 3  # 8 + 8 + 5: none took more than 8
    # oldest first: every item of a round arrived before every item of a later round (within a
    # round the batches are sorted by length, so compare the rounds as sets)
    seen = runner.seen
    assert [sorted(seen[:8]), sorted(seen[8:16]), sorted(seen[16:])] == [
        list(range(8)), list(range(8, 16)), list(range(16, 21))]


def test_a_failing_batch_fails_only_its_items_and_the_worker_goes_on():
    async def main():
        runner = FakeRunner()
        batcher = await started(runner, max_batch_items=2, max_wait_ms=50)
        poisoned = batcher.submit([FakeItem(1, poison=True), FakeItem(2)], deadline_in(10))
        healthy = batcher.submit([FakeItem(3, length=5), FakeItem(4, length=5)], deadline_in(10))
        outcomes = await asyncio.gather(poisoned, healthy, return_exceptions=True)
        after = await batcher.submit([FakeItem(5)], deadline_in(10))
        await batcher.stop()
        return outcomes, after

    (failed, ok), after = run(main())
    assert isinstance(failed, InferenceFailed)
    assert ok == [6, 8]
    assert after == [10]


def test_a_runner_returning_the_wrong_count_fails_that_batch_only():
    async def main():
        calls = []

        def runner(items):
            calls.append(len(items))
            return [] if len(calls) == 1 else [item.value for item in items]

        batcher = await started(runner, max_wait_ms=1)
        first = await asyncio.gather(batcher.submit([FakeItem(1)], deadline_in(10)), return_exceptions=True)
        second = await batcher.submit([FakeItem(2)], deadline_in(10))
        await batcher.stop()
        return first[0], second

    first, second = run(main())
    assert isinstance(first, InferenceFailed)
    assert second == [2]


def test_a_full_queue_refuses_at_once_with_retry_after():
    async def main():
        runner = FakeRunner()
        batcher = await started(runner, max_batch_items=100, max_wait_ms=300, max_queue_items=5)
        waiting = asyncio.ensure_future(batcher.submit([FakeItem(i) for i in range(4)], deadline_in(10)))
        await asyncio.sleep(0)  # let it enqueue
        assert batcher.queued == 4
        began = time.perf_counter()
        with pytest.raises(QueueFull) as refused:
            await batcher.submit([FakeItem(9), FakeItem(10)], deadline_in(10))
        refused_after = time.perf_counter() - began
        assert await waiting == [0, 2, 4, 6]
        await batcher.stop()
        return refused.value, refused_after, runner

    error, refused_after, runner = run(main())
    assert error.headers["Retry-After"] == "1"
    assert "max_queue_items=5" in error.message
    assert refused_after < 0.1  # at once, not after the 300 ms round
    assert 9 not in runner.seen


def test_a_passed_deadline_raises_and_the_item_is_never_run():
    async def main():
        runner = FakeRunner()
        batcher = await started(runner, max_batch_items=100, max_wait_ms=300)
        with pytest.raises(DeadlineExceeded):
            await batcher.submit([FakeItem(1)], deadline_in(0.05))
        served = await batcher.submit([FakeItem(2)], deadline_in(10))
        await batcher.stop()
        return runner, served

    runner, served = run(main())
    assert served == [4]
    assert 1 not in runner.seen


def test_cancelled_requests_are_skipped():
    async def main():
        runner = FakeRunner()
        batcher = await started(runner, max_batch_items=100, max_wait_ms=100)
        task = asyncio.ensure_future(batcher.submit([FakeItem(1), FakeItem(2)], deadline_in(10)))
        await asyncio.sleep(0.01)
        task.cancel()
        served = await batcher.submit([FakeItem(3)], deadline_in(10))
        await batcher.stop()
        return runner, served

    runner, served = run(main())
    assert served == [6]
    assert runner.seen == [3]


def test_a_slow_batch_does_not_block_the_event_loop():
    async def main():
        runner = FakeRunner(delay_s=0.3)
        batcher = await started(runner, max_wait_ms=0)
        pending = asyncio.ensure_future(batcher.submit([FakeItem(1)], deadline_in(10)))
        ticks = 0
        while not pending.done():
            await asyncio.sleep(0.01)
            ticks += 1
        await batcher.stop()
        return ticks

    assert run(main()) >= 3  # the loop kept running while the 0.3 s batch ran in its thread


def test_stop_finishes_queued_items_then_refuses_new_ones():
    async def main():
        runner = FakeRunner()
        batcher = await started(runner, max_batch_items=100, max_wait_ms=10_000)
        waiting = asyncio.ensure_future(batcher.submit([FakeItem(7)], deadline_in(30)))
        await asyncio.sleep(0.01)
        await batcher.stop()  # flushes at once instead of waiting 10 s
        with pytest.raises(NotReady):
            await batcher.submit([FakeItem(8)], deadline_in(10))
        return await waiting

    assert run(main()) == [14]


def test_batcher_records_queue_and_batch_metrics():
    async def main():
        metrics = Metrics().for_model("m")
        batcher = Batcher(FakeRunner(), BatchingConfig(max_batch_items=4, max_wait_ms=20), metrics)
        batcher.start()
        await asyncio.gather(*(batcher.submit([FakeItem(i, length=3)], deadline_in(10)) for i in range(8)))
        await batcher.stop()
        return metrics

    metrics = run(main())

    def value(name: str) -> float | None:  # the model's own series
        return metrics.parent.registry.get_sample_value(name, {"model": "m"})
    assert value("atom_batch_items_count") == 2
    assert value("atom_batch_items_sum") == 8
    assert value("atom_round_items_sum") == 8 and 1 <= value("atom_round_items_count") <= 2  # a round holds >= 1 batch
    assert value("atom_batch_padded_components_sum") == 24
    assert value("atom_queue_wait_seconds_count") == 8
    assert value("atom_queue_items") == 0


def test_a_shutdown_that_cannot_drain_fails_the_waiting_requests():
    async def main():
        runner = FakeRunner(delay_s=0.5)
        batcher = await started(runner, max_batch_items=1, max_wait_ms=0)
        waiting = asyncio.ensure_future(batcher.submit([FakeItem(1), FakeItem(2), FakeItem(3)], deadline_in(30)))
        await asyncio.sleep(0.05)  # the first item is running
        began = time.perf_counter()
        await batcher.stop(drain_timeout_s=0.1)
        with pytest.raises(NotReady):
            await waiting
        return time.perf_counter() - began, runner

    waited, runner = run(main())
    assert waited < 5  # answered at shutdown, not at the 30 s deadline
    assert runner.seen == [1]


def test_a_fault_in_the_batcher_itself_fails_its_round_and_the_worker_goes_on():
    """Not the model failing: the batcher's own bookkeeping raising (here, a metric)."""

    async def main():
        runner = FakeRunner()
        batcher = Batcher(runner, BatchingConfig(max_batch_items=2, max_wait_ms=50), Metrics().for_model("m"))
        real_observe = batcher.metrics.batch_items.observe
        calls = {"n": 0}

        def observe_once_broken(value):
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("metrics backend broke")
            real_observe(value)

        batcher.metrics.batch_items.observe = observe_once_broken
        batcher.start()
        # 4 items in one round -> 2 batches; the first batch's bookkeeping raises
        first = asyncio.ensure_future(batcher.submit([FakeItem(i) for i in range(4)], deadline_in(10)))
        with pytest.raises(InferenceFailed):
            await first
        queued_after = batcher.queued
        later = await batcher.submit([FakeItem(7)], deadline_in(10))
        await batcher.stop()
        return queued_after, later, runner

    queued_after, later, runner = run(main())
    assert queued_after == 0  # nothing of the failed round is still counted against the queue
    assert later == [14]  # the worker kept serving
    assert runner.seen == [7]  # the failed round ran nothing


class ConcurrencyRunner(FakeRunner):
    """FakeRunner that records how many batches were running at once, at most."""

    def __init__(self, delay_s: float):
        super().__init__(delay_s)
        self.running = 0
        self.most = 0
        self.threads: set[int] = set()

    def __call__(self, items):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.threads.add(threading.get_ident())
        try:
            return super().__call__(items)
        finally:
            with self.lock:
                self.running -= 1


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_workers_run_that_many_batches_at_once_and_every_request_keeps_its_answers(workers):
    async def main():
        runner = ConcurrencyRunner(delay_s=0.02)
        batcher = Batcher(runner, BatchingConfig(max_batch_items=2), Metrics().for_model("m"), workers=workers)
        batcher.start()
        requests = [[FakeItem(10 * r + i) for i in range(r % 3 + 1)] for r in range(24)]
        results = await asyncio.gather(*(batcher.submit(items, deadline_in(10)) for items in requests))
        queued = batcher.queued
        await batcher.stop()
        return runner, requests, results, queued

    runner, requests, results, queued = run(main())
    for items, result in zip(requests, results):
        assert result == [item.value * 2 for item in items]
    assert runner.most == workers and len(runner.threads) == workers
    assert sorted(runner.seen) == sorted(item.value for items in requests for item in items)  # each item ran once
    assert queued == 0


def test_with_several_workers_a_round_is_run_before_anything_that_arrived_after_it():
    """Two workers share one round's batches; items that arrive meanwhile wait for the next round."""

    async def main():
        runner = ConcurrencyRunner(delay_s=0.03)
        batcher = Batcher(runner, BatchingConfig(max_batch_items=1, max_round_items=4), Metrics().for_model("m"),
                          workers=2)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit([FakeItem(i) for i in range(4)], deadline_in(10)))
        await asyncio.sleep(0.01)  # the round of 4 was taken; two of its batches are running
        later = asyncio.ensure_future(batcher.submit([FakeItem(100)], deadline_in(10)))
        await asyncio.gather(first, later)
        await batcher.stop()
        return runner

    runner = run(main())
    assert runner.seen.index(100) == 4 and runner.most == 2


def test_a_stop_that_cannot_drain_fails_the_waiting_batches_of_every_worker():
    async def main():
        runner = ConcurrencyRunner(delay_s=0.3)
        batcher = Batcher(runner, BatchingConfig(max_batch_items=1), Metrics().for_model("m"), workers=2)
        batcher.start()
        pending = asyncio.ensure_future(batcher.submit([FakeItem(i) for i in range(6)], deadline_in(10)))
        await asyncio.sleep(0.05)
        await batcher.stop(drain_timeout_s=0.05)
        with pytest.raises(NotReady):
            await pending
        return batcher

    batcher = run(main())
    assert batcher.queued == 0 and not batcher.running


def test_workers_must_be_at_least_one():
    with pytest.raises(ValueError, match="at least 1"):
        Batcher(FakeRunner(), BatchingConfig(), workers=0)
