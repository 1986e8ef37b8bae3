"""The sweep behind `switch_interval_ms` (how long a Python thread may keep the interpreter lock
while another waits for it).

    python benchmarks/switch_interval.py [--intervals 5,1,0.5,0.2] [--duration 8] [--repeats 2]

The service's event loop, its prepare threads and its inference workers share one interpreter
lock. A thread that wants it waits until the holder lets go, which a thread in Python code does
only every `sys.getswitchinterval()` (5 ms by default): a batch whose ONNX Runtime call returned
can wait that long to hand its results back, and the event loop as long to answer the next
request. With a small model the HTTP and Python path sets the pace (benchmarks/results/
http_ceiling.md: a third of the machine idle at 32 clients), so that wait may matter there.

Each interval is served (`--switch-interval-ms`) to closed-loop loads of 8, 32 and 128 clients x 1
tweet of the **validation** split on /v1/embeddings, `--duration` s each, every setting started
afresh in each of `--repeats` interleaved repetitions, median kept, for three systems: the small
bundle (fp32: it has no int8 copy), the default bundle as a CPU serves it (its int8 copy) and the
default bundle in fp32 (the precision the peer table compares).

The rule, fixed before the run: for each system and load, items/s as a ratio to Python's 5 ms;
the default is the interval with the highest mean ratio over the nine (system, load) cells.
Writes benchmarks/results/switch_interval.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, describe, machine, served_settings_sweep, write_results  # noqa: E402

LEVELS = (8, 32, 128)
BASELINE_MS = 5.0  # Python's own default
SYSTEMS = {  # name -> (bundle folder, flags)
    "small fp32": ("bundles/tweets-small", ("--precision", "fp32")),
    "default int8": ("bundles/tweets", ("--precision", "int8")),
    "default fp32": ("bundles/tweets", ("--precision", "fp32")),
}


def choose(rows: list[dict], intervals: list[float]) -> tuple[float, dict, dict]:
    """(the chosen interval, median items/s per (system, interval, clients), mean ratio per interval)."""
    median: dict[tuple, float] = {}
    for key in {(r["system"][0], r["system"][1], r["clients"]) for r in rows}:
        median[key] = statistics.median(r["items_per_s"] for r in rows if (r["system"][0], r["system"][1], r["clients"]) == key)
    systems = sorted({key[0] for key in median})
    ratio = {ms: statistics.mean(median[(s, ms, c)] / median[(s, BASELINE_MS, c)] for s in systems for c in LEVELS)
             for ms in intervals}
    return max(intervals, key=lambda ms: ratio[ms]), median, ratio


def report(results: dict) -> str:
    intervals, median, ratio = results["intervals"], results["median"], results["mean_ratio"]
    p99 = results["median_p99_ms"]
    lines = ["# The interpreter lock's switch interval: `switch_interval_ms`", "",
             f"`{results['command']}` on {describe(results['machine'])}, load average "
             f"{results['load_average_after']:.2f} after. /v1/embeddings, 1 validation tweet per request, closed loop, "
             f"{results['duration_s']:g} s per load, median of {results['repeats']} interleaved repetitions, each "
             "setting a fresh service.", "",
             "| system | switch interval ms | items/s, 8 clients | 32 | 128 | p99 ms, 8 / 32 / 128 | items/s / 5 ms, mean |",
             "|---|---:|---:|---:|---:|---|---:|"]
    for system in SYSTEMS:
        for ms in intervals:
            cells = [median[f"{system}|{ms:g}|{c}"] for c in LEVELS]
            own = statistics.mean(median[f"{system}|{ms:g}|{c}"] / median[f"{system}|{BASELINE_MS:g}|{c}"] for c in LEVELS)
            lines.append(f"| {system} | {ms:g} | " + " | ".join(f"{v:.0f}" for v in cells) + " | "
                         + " / ".join(f"{p99[f'{system}|{ms:g}|{c}']:.0f}" for c in LEVELS) + f" | {own:.3f} |")
    lines += ["", "Mean ratio to 5 ms over the nine (system, load) cells: "
              + ", ".join(f"{ms:g} ms {ratio[f'{ms:g}']:.3f}" for ms in intervals)
              + f"; chosen: **{results['chosen']:g} ms** (service/config.py `switch_interval_ms`, "
              f"default {results['service_default']:g} when this ran).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--intervals", default="5,1,0.5,0.2", help="milliseconds; 5 (Python's default) must be one")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per load")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    intervals = [float(v) for v in args.intervals.split(",")]
    if BASELINE_MS not in intervals:
        parser.error("the intervals must include 5 (Python's default), the baseline of the ratios")
    from peers_sweep import validation_texts
    from service.config import Settings

    host = machine("CPUExecutionProvider")
    systems = {(name, ms): (ROOT / bundle, (*flags, "--switch-interval-ms", f"{ms:g}"))
               for name, (bundle, flags) in SYSTEMS.items() for ms in intervals}
    rows = served_settings_sweep(systems, validation_texts(2048), LEVELS, args.duration, args.repeats)
    chosen, median, ratio = choose(rows, intervals)
    p99 = {key: statistics.median(r["p99_ms"] or 0 for r in rows if (r["system"][0], r["system"][1], r["clients"]) == key)
           for key in median}
    results = {"command": ("python benchmarks/switch_interval.py " + " ".join(argv if argv is not None else sys.argv[1:])).strip(),
               "machine": host, "load_average_after": os.getloadavg()[0], "split": "validation",
               "duration_s": args.duration, "repeats": args.repeats, "levels": list(LEVELS), "intervals": intervals,
               "systems": {name: {"bundle": bundle, "flags": list(flags)} for name, (bundle, flags) in SYSTEMS.items()},
               "rows": [{**r, "system": list(r["system"])} for r in rows],
               "median": {f"{s}|{ms:g}|{c}": v for (s, ms, c), v in median.items()},
               "median_p99_ms": {f"{s}|{ms:g}|{c}": v for (s, ms, c), v in p99.items()},
               "mean_ratio": {f"{ms:g}": v for ms, v in ratio.items()}, "chosen": chosen,
               "service_default": Settings.model_fields["switch_interval_ms"].default}
    write_results("switch_interval", results, report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
