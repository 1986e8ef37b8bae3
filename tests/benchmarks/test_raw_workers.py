"""The raw side of served/raw runs the model as the service's workers do (benchmarks/batch_padding.py)."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from batch_padding import items_per_s  # noqa: E402
from serve import raw_for  # noqa: E402


class SlowRuntime:
    """run_feeds sleeps (releasing the GIL, as ONNX Runtime does) and records its threads."""

    def __init__(self, delay_s: float = 0.01):
        self.delay_s, self.threads, self.calls, self.lock = delay_s, set(), 0, threading.Lock()

    def run_feeds(self, feed):
        with self.lock:
            self.threads.add(threading.get_ident())
            self.calls += 1
        time.sleep(self.delay_s)
        return []

    def pad(self, components):
        return {"attention_mask": np.ones((len(components), 1))}


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_items_per_s_runs_the_feeds_on_as_many_threads_as_workers_and_scales_with_them(workers):
    runtime = SlowRuntime()
    feeds = [{"attention_mask": np.ones((n, 4))} for n in (1, 2, 3)]
    rate = items_per_s(runtime, feeds, 0.3, workers)
    assert len(runtime.threads - {threading.get_ident()}) == (workers if workers > 1 else 0)
    # sleeping calls overlap: about `workers` times the items of one thread (2 items a call, 10 ms each)
    assert 0.6 * workers * 200 < rate < 1.2 * workers * 200


def test_raw_for_keys_its_cache_by_the_workers_and_records_them():
    runtime = SlowRuntime(0.0)
    items = [type("Item", (), {"length": 3, "components": np.ones(3)})() for _ in range(8)]
    batching = {"max_batch_items": 4, "max_batch_padding": 0.1, "max_batch_components": 8192}
    cache: dict = {}
    one, two = {"mean_round_items": 4}, {"mean_round_items": 4}
    raw_for(runtime, items, one, batching, 0.05, cache, 1)
    raw_for(runtime, items, two, batching, 0.05, cache, 2)
    assert len(cache) == 2 and (one["raw_workers"], two["raw_workers"]) == (1, 2)
    assert one["raw_round_items"] == two["raw_round_items"] == 4


def test_the_services_auto_workers_are_the_committed_sweeps_choice():
    import json

    from service.config import AUTO_CPU_WORKERS

    results = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "inference_workers.json"
    sweep = json.loads(results.read_text())
    assert sweep["split"] == "validation"
    means = sweep["served_mean_over_loads_and_precisions"]
    assert sweep["chosen"] == int(max(means, key=means.get)) == AUTO_CPU_WORKERS


def test_raw_runs_no_more_workers_than_the_load_keeps_batches_in_flight():
    from serve import in_flight

    assert in_flight(3, 1, 1) == 1  # one client, one input: one batch at a time
    assert in_flight(3, 2, 1) == 2 and in_flight(3, 1, 16) == 3 and in_flight(3, 128, 1) == 3
    assert in_flight(1, 128, 16) == 1
