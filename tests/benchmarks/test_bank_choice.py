"""The bank benchmark chooses search-time settings on tuning queries, never on the reported ones."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import bank  # noqa: E402


def point(nprobe: int, tune: float, reported: float) -> dict:
    return {"nprobe": nprobe, "tune_recall_at_10": tune, "recall_at_10": reported, "p50_ms": 1.0, "p99_ms": 2.0}


def test_the_cheapest_setting_reaching_the_target_on_tuning_queries_is_chosen():
    sweep = [point(64, 0.97, 0.96), point(16, 0.90, 0.99), point(32, 0.951, 0.90), point(48, 0.96, 0.97)]
    assert bank.choose_setting(sweep, target=0.95)["nprobe"] == 32  # reported recall 0.90 does not matter


def test_when_no_setting_reaches_the_target_the_best_tuning_recall_is_chosen():
    sweep = [point(16, 0.80, 0.99), point(32, 0.85, 0.70), point(8, 0.60, 0.60)]
    assert bank.choose_setting(sweep, target=0.95)["nprobe"] == 32


def test_an_empty_sweep_chooses_nothing():
    assert bank.choose_setting([]) is None


def test_measure_index_reports_tuning_and_reported_recall_apart():
    rng = np.random.default_rng(0)
    base = bank.normalise(rng.standard_normal((2000, 16)).astype(np.float32))
    queries, tuning = base[:50] + 0.01, base[50:100] + 0.01
    exact = bank.AtomIndex(base, spec=bank.IndexSpec("flat"))
    truth, tune_truth = exact.nearest(queries, 10)[0], exact.nearest(tuning, 10)[0]
    spec = bank.IndexSpec("ivf", {"nlist": 16, "nprobe": 1})
    result = bank.measure_index(base, queries, spec, truth, singles=4, batches=1,
                                sweep=[{"nprobe": 1}, {"nprobe": 16}], tuning=(tuning, tune_truth))
    by_probe = {p["nprobe"]: p for p in result["sweep"]}
    assert by_probe[16]["tune_recall_at_10"] == 1.0 and by_probe[16]["recall_at_10"] == 1.0  # every list: exact
    assert by_probe[1]["tune_recall_at_10"] < bank.TARGET_RECALL  # one list of 16 misses most neighbours
    assert result["chosen"] == {"nprobe": 16}
