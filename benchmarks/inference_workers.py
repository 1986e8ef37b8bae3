"""The sweep behind `inference_workers` (batches of one model run at once, auto on CPU).

    python benchmarks/inference_workers.py [--bundle bundles/tweets] [--workers 1,2,3,4] [--duration 10]

The batcher can run a model's batches in several worker threads at once, one ONNX Runtime
session shared by all of them and the model's threads split evenly among them (W workers on C
cores: C // W intra-op threads each, at least one). Two measurements, fp32 and int8, both on
the tweets **validation** split (the benchmarks report the test split):

1. in process (no HTTP): items/s over the batches the batcher cuts (padding bound 0.1) from
   rounds of 8, 32 and 128 items, interleaved repetitions, median kept;
2. served, as the peers' settings were chosen (benchmarks/peers_sweep.py): the service started
   with each worker count, closed-loop loads of 8, 32 and 128 clients x 1 validation tweet on
   /v1/embeddings, `--duration` s each, two interleaved repetitions, median kept.

The default is the count with the most served items/s, averaged over the three loads and both
precisions: one setting serves either copy (on a CPU the service takes the int8 copy where the
bundle has one, fp32 where not). Writes benchmarks/results/inference_workers.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from batch_padding import ROUNDS, items_per_s, policy_batches  # noqa: E402
from common import describe, machine  # noqa: E402

PADDING = 0.1  # the service's bound on a CPU (service/app.py CPU_BATCH_PADDING)
LEVELS = (8, 32, 128)  # clients of the served sweep


def served_sweep(bundle_dir: Path, texts: list[str], counts: list[int], precisions: list[str], duration_s: float,
                 repeats: int) -> list[dict]:
    """One row per (precision, workers, clients, repeat): the service under closed-loop load."""
    from common import served_settings_sweep

    systems = {(precision, workers): (bundle_dir, ("--precision", precision, "--inference-workers", str(workers)))
               for precision in precisions for workers in counts}
    rows = served_settings_sweep(systems, texts, LEVELS, duration_s, repeats)
    for row in rows:
        row["precision"], row["workers"] = row.pop("system")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "bundles" / "tweets")
    parser.add_argument("--workers", default="1,2,3,4", help="worker counts compared")
    parser.add_argument("--precisions", default="fp32,int8")
    parser.add_argument("--items", type=int, default=1024, help="validation texts used")
    parser.add_argument("--seconds", type=float, default=2.0, help="per configuration and repetition")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per served load")
    parser.add_argument("--served-repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)

    from contract.bundle import load_bundle
    from service.app import CPU_BATCH_PADDING
    from service.config import AUTO_CPU_WORKERS, Settings
    from peers_sweep import validation_texts
    from service.runtime import Runtime
    from training.data import load_dataset

    assert CPU_BATCH_PADDING == PADDING, "the sweep must cut batches as the service does"
    bundle = load_bundle(args.bundle)
    cores = len(os.sched_getaffinity(0))
    counts = [int(w) for w in args.workers.split(",")]
    precisions = [p for p in args.precisions.split(",") if bundle.model_path(p) is not None]
    texts = load_dataset(bundle.manifest.training.dataset).validation.texts[: args.items]
    host = machine("CPUExecutionProvider")  # with the load average before anything runs
    threads = {w: Settings(inference_workers=w).workers_for(bundle.manifest.name)[1] for w in counts}  # the service's split
    runtimes = {(p, w): Runtime(bundle, device="cpu", precision=p, threads=threads[w])
                for p in precisions for w in counts}
    items = runtimes[(precisions[0], counts[0])].prepare(texts)
    rng = np.random.default_rng(0)
    items = [items[i] for i in rng.permutation(len(items))]  # arrival order: no sorting by the client
    feeds = {r: policy_batches(runtimes[(precisions[0], counts[0])], items, r, PADDING) for r in ROUNDS}
    configs = [(p, w, r) for p in precisions for r in ROUNDS for w in counts]
    runs: dict[tuple, list[float]] = {c: [] for c in configs}
    for repeat in range(args.repeats):
        for precision, workers, round_size in configs:
            runs[(precision, workers, round_size)].append(
                items_per_s(runtimes[(precision, workers)], feeds[round_size], args.seconds, workers))
        print(f"repeat {repeat + 1}/{args.repeats} done", file=sys.stderr, flush=True)
    rows = [{"precision": p, "workers": w, "threads_per_worker": threads[w], "round_items": r,
             "mean_batch_items": len(items) / len(feeds[r]), "items_per_s_median": float(np.median(runs[(p, w, r)])),
             "items_per_s": runs[(p, w, r)]} for p, w, r in configs]
    median = {(row["precision"], row["workers"], row["round_items"]): row["items_per_s_median"] for row in rows}
    mean = {p: {w: float(np.mean([median[(p, w, r)] for r in ROUNDS])) for w in counts} for p in precisions}
    best = {p: max(counts, key=lambda w: mean[p][w]) for p in precisions}
    del runtimes  # the sessions' memory, before the services start
    served = served_sweep(args.bundle, validation_texts(2048), counts, precisions, args.duration, args.served_repeats)
    points = {(p, w, c): [r for r in served if (r["precision"], r["workers"], r["clients"]) == (p, w, c)]
              for p in precisions for w in counts for c in LEVELS}
    served_median = {key: float(np.median([r["items_per_s"] for r in rs])) for key, rs in points.items()}
    served_p99 = {key: float(np.median([r["p99_ms"] or 0 for r in rs])) for key, rs in points.items()}
    overall = {w: float(np.mean([served_median[(p, w, c)] for p in precisions for c in LEVELS])) for w in counts}
    chosen = max(counts, key=lambda w: overall[w])
    result = {"command": "python benchmarks/inference_workers.py " + " ".join(argv or sys.argv[1:]),
              "machine": host,
              "load_average_after": os.getloadavg()[0], "bundle": bundle.manifest.name, "split": "validation",
              "items": len(items), "repeats": args.repeats, "seconds": args.seconds, "cores": cores, "rows": rows,
              "mean_over_rounds": {p: {str(w): v for w, v in m.items()} for p, m in mean.items()},
              "best": best, "served": served, "served_duration_s": args.duration,
              "served_mean_over_loads_and_precisions": {str(w): v for w, v in overall.items()},
              "chosen": chosen, "service_default": AUTO_CPU_WORKERS}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "inference_workers.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Batches at once: `inference_workers` ({bundle.manifest.name}, CPU)", "",
             f"`{result['command'].strip()}` on {describe(host)}, load average {result['load_average_after']:.2f} "
             f"after. Items/s of ONNX Runtime in process over the batches the",
             f"batcher cuts (padding bound {PADDING}) from rounds of queued items, W workers sharing one session with",
             f"{cores} // W intra-op threads each; {len(items)} tweets of the validation split in arrival order, median",
             f"of {args.repeats} interleaved repetitions of {args.seconds:g} s.", "",
             "| precision | round items | mean batch | " + " | ".join(
                 f"{w} x {threads[w]} thread{'s' if threads[w] > 1 else ''}" for w in counts) + " |",
             "|---|---:|---:|" + "---:|" * len(counts)]
    for p in precisions:
        for r in ROUNDS:
            cells = [median[(p, w, r)] for w in counts]
            top = max(cells)
            lines.append(f"| {p} | {r} | {len(items) / len(feeds[r]):.1f} | " + " | ".join(
                f"**{v:.0f}**" if v == top else f"{v:.0f}" for v in cells) + " |")
        lines.append(f"| {p} | mean | | " + " | ".join(f"{mean[p][w]:.0f}" for w in counts) + " |")
    lines += ["", "In process, best mean over the round sizes: " + ", ".join(
        f"{p} {best[p]} workers ({mean[p][best[p]] / mean[p][counts[0]]:.2f}x {counts[0]} worker"
        f"{'s' if counts[0] > 1 else ''})" for p in precisions) + ".", "",
        f"Served (`python -m service --precision P --inference-workers W`, /v1/embeddings, 1 validation tweet per "
        f"request, closed loop, {args.duration:g} s per load, median of {args.served_repeats} interleaved repetitions; "
        f"load average {min(r['load_average_1m'] for r in served):.2f} to {max(r['load_average_1m'] for r in served):.2f} "
        "during, the load process and the service themselves included):", "",
        "| precision | workers | items/s, 8 clients | 32 | 128 | p99 ms, 8 / 32 / 128 |", "|---|---:|---:|---:|---:|---|"]
    for p in precisions:
        for w in counts:
            lines.append(f"| {p} | {w} x {threads[w]} | " + " | ".join(
                f"{served_median[(p, w, c)]:.0f}" for c in LEVELS) + " | " + " / ".join(
                f"{served_p99[(p, w, c)]:.0f}" for c in LEVELS) + " |")
    lines += ["", "Served items/s averaged over the loads and precisions: " + ", ".join(
        f"{w} workers {v:.0f}" for w, v in overall.items()) + f"; chosen: **{chosen}** "
        f"(service/config.py AUTO_CPU_WORKERS, the default, was {AUTO_CPU_WORKERS} during this run)."]
    (args.out / "inference_workers.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
