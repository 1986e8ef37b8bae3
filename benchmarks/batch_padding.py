"""The sweep behind the batcher's padding bound (`max_batch_padding`, auto on CPU).

    python benchmarks/batch_padding.py [--bundle bundles/tweets] [--precision fp32]

The batcher takes a round of queued items, sorts it by length and cuts it into batches; a batch
stops growing when its padded components would pass (1 + padding) x its real components. This
measures, in process (no HTTP), items/s of ONNX Runtime over the batches that policy makes from
rounds of 8, 32 and 128 items (what 8, 32 and 128 concurrent clients hand the batcher), for
each padding bound, on the tweets **validation** split (the benchmarks report the test split).
Configurations run interleaved, several repetitions each, and the median is kept, so a burst of
other work on a shared machine does not favour one of them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.batcher import cut_batches  # noqa: E402

PADDINGS = (0.0, 0.05, 0.1, 0.2, 0.5, math.inf)
ROUNDS = (8, 32, 128)


class _Entry:
    """What cut_batches reads of a queued item."""

    def __init__(self, item):
        self.item, self.length = item, item.length


def policy_batches(runtime, items: list, round_size: int, padding: float, max_items: int = 32,
                   max_components: int = 8192) -> list[dict]:
    """The padded feeds the server would run for these items arriving in rounds of `round_size`."""
    feeds = []
    for start in range(0, len(items), round_size):
        entries = [_Entry(item) for item in items[start : start + round_size]]
        for batch in cut_batches(entries, max_items, max_components, padding):
            feeds.append(runtime.pad([entry.item.components for entry in batch]))
    return feeds


def items_per_s(runtime, feeds: list[dict], seconds: float, workers: int = 1) -> float:
    """Items/s of the runtime's session over the feeds, in turn, for about `seconds`; with
    `workers` threads each taking the next feed when free, as the batcher's workers do."""
    runtime.run_feeds(feeds[0])
    if workers == 1:
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            for feed in feeds:
                runtime.run_feeds(feed)
                done += len(feed["attention_mask"])
        return done / (time.perf_counter() - started)
    turns = itertools.count()  # next() on it is atomic under the GIL: each feed run once per lap
    counts = [0] * workers
    started = time.perf_counter()

    def work(index: int) -> None:
        while time.perf_counter() - started < seconds:
            feed = feeds[next(turns) % len(feeds)]
            runtime.run_feeds(feed)
            counts[index] += len(feed["attention_mask"])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "bundles" / "tweets")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "int8"))
    parser.add_argument("--items", type=int, default=1024, help="validation texts used")
    parser.add_argument("--seconds", type=float, default=2.0, help="per configuration and repetition")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)

    from contract.bundle import load_bundle
    from service.runtime import Runtime
    from training.data import load_dataset

    bundle = load_bundle(args.bundle)
    runtime = Runtime(bundle, device="cpu", precision=args.precision)
    texts = load_dataset(bundle.manifest.training.dataset).validation.texts[: args.items]
    items = runtime.prepare(texts)
    rng = np.random.default_rng(0)
    items = [items[i] for i in rng.permutation(len(items))]  # arrival order: no sorting by the client
    configs = [(r, p) for r in ROUNDS for p in PADDINGS]
    feeds = {c: policy_batches(runtime, items, *c) for c in configs}
    runs: dict[tuple, list[float]] = {c: [] for c in configs}
    for repeat in range(args.repeats):
        for config in configs:
            runs[config].append(items_per_s(runtime, feeds[config], args.seconds))
        print(f"repeat {repeat + 1}/{args.repeats} done", file=sys.stderr)
    rows = []
    for (round_size, padding), values in runs.items():
        rows.append({"round_items": round_size, "max_batch_padding": None if math.isinf(padding) else padding,
                     "mean_batch_items": len(items) / len(feeds[(round_size, padding)]),
                     "items_per_s_median": float(np.median(values)), "items_per_s": values})
    best = {r: max((row for row in rows if row["round_items"] == r), key=lambda row: row["items_per_s_median"])
            for r in ROUNDS}
    # The default: the bound with the best mean items/s over the three round sizes.
    mean_by_padding = {p: float(np.mean([np.median(runs[(r, p)]) for r in ROUNDS])) for p in PADDINGS}
    chosen = max(PADDINGS, key=lambda p: mean_by_padding[p])
    result = {"command": "python benchmarks/batch_padding.py " + " ".join(argv or sys.argv[1:]),
              "bundle": bundle.manifest.name, "precision": args.precision, "model_file": runtime.model_file,
              "split": "validation", "items": len(items), "repeats": args.repeats, "seconds": args.seconds,
              "mean_components": float(np.mean([item.length for item in items])), "rows": rows,
              "best": {str(r): best[r]["max_batch_padding"] for r in ROUNDS},
              "mean_over_rounds": {("unbounded" if math.isinf(p) else f"{p:g}"): v for p, v in mean_by_padding.items()},
              "chosen": None if math.isinf(chosen) else chosen}
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"batch_padding{'' if args.precision == 'fp32' else '_' + args.precision}"
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Padding bound of a batch ({bundle.manifest.name}, {runtime.model_file}, CPU)", "",
             f"`{result['command'].strip()}`: items/s of ONNX Runtime in process over the batches the batcher cuts",
             f"from rounds of queued items; {len(items)} tweets of the validation split in arrival order",
             f"({result['mean_components']:.1f} tokens on average), median of {args.repeats} interleaved repetitions.",
             "", "| round items | max_batch_padding | mean batch | items/s |", "|---:|---:|---:|---:|"]
    for row in rows:
        padding = "unbounded" if row["max_batch_padding"] is None else f"{row['max_batch_padding']:g}"
        mark = " **best**" if row is best[row["round_items"]] else ""
        lines.append(f"| {row['round_items']} | {padding} | {row['mean_batch_items']:.1f} | "
                     f"{row['items_per_s_median']:.0f}{mark} |")
    lines += ["", "Mean items/s over the three round sizes: " + ", ".join(
        f"{p} {v:.0f}" for p, v in result["mean_over_rounds"].items()) + f"; chosen: **{result['chosen']}**",
        "(service/app.py CPU_BATCH_PADDING; on a GPU the bound is lifted: a batch's count, not its padding, costs there)."]
    (args.out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
