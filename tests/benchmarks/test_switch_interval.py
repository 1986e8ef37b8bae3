"""The switch-interval sweep's rule and the service's default (benchmarks/switch_interval.py),
and the bound of benchmarks/http_ceiling.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from http_ceiling import ceiling  # noqa: E402
from switch_interval import LEVELS, SYSTEMS, choose  # noqa: E402


def rows_for(items: dict[tuple[str, float], list[float]], repeats: list[float] = (1.0, 0.9, 1.1)) -> list[dict]:
    """Synthetic sweep rows: items/s per (system, interval) at each load, times each repeat's factor."""
    return [{"system": (system, ms), "clients": clients, "items_per_s": per_load[i] * factor}
            for (system, ms), per_load in items.items() for i, clients in enumerate(LEVELS) for factor in repeats]


def test_choose_takes_the_interval_with_the_best_mean_ratio_to_pythons_5_ms():
    # a: the small system gains 30% at 0.5 ms; the big one loses 5%. Ratios, not raw items/s, decide:
    # the small system's larger figures must not outweigh the other.
    items = {("small", 5.0): [1000, 1000, 1000], ("small", 0.5): [1300, 1300, 1300], ("small", 1.0): [1100] * 3,
             ("big", 5.0): [200, 200, 200], ("big", 0.5): [190, 190, 190], ("big", 1.0): [200] * 3}
    chosen, median, ratio = choose(rows_for(items), [5.0, 1.0, 0.5])
    assert median[("small", 0.5, 32)] == pytest.approx(1300)  # the median of the repeats
    assert ratio[5.0] == pytest.approx(1.0)
    assert ratio[0.5] == pytest.approx((1.3 + 0.95) / 2) and ratio[1.0] == pytest.approx((1.1 + 1.0) / 2)
    assert chosen == 0.5
    # the same figures with the big system losing 40% at 0.5 ms: 1.0 ms wins
    items[("big", 0.5)] = [120, 120, 120]
    assert choose(rows_for(items), [5.0, 1.0, 0.5])[0] == 1.0


def test_the_services_default_switch_interval_is_the_committed_sweeps_choice():
    from service.config import Settings

    sweep = json.loads((ROOT / "benchmarks" / "results" / "switch_interval.json").read_text())
    assert sweep["split"] == "validation" and set(sweep["systems"]) == set(SYSTEMS)
    ratio = {float(ms): value for ms, value in sweep["mean_ratio"].items()}
    assert sweep["chosen"] == max(ratio, key=ratio.get) == Settings().switch_interval_ms


def test_the_ceiling_adds_the_bare_requests_and_the_models_cpu():
    assert ceiling(2, 0.5, 1.5) == pytest.approx(1000.0)  # 2 cores / 2 ms per item
    assert ceiling(2, 0.0, 10.0) == pytest.approx(200.0)  # no HTTP cost: the model alone
    assert ceiling(2, 0.06, 0.2) < ceiling(2, 0.0, 0.2)
