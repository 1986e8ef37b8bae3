"""The bundle's own bank: exact search against the indexes the service could build at start-up.

    python benchmarks/own_bank.py [--bundle bundles/tweets] [--queries 500]

Queries are the bundle's embeddings of tweets of the **validation** split (run through the
bundle's own model, as the service would); the bank is the bundle's atoms.npz. For each index
(exact, IVF and HNSW with the project's default parameters for this size, contract/index.py),
with one FAISS thread as the service runs it: build time, recall@10 against exact, and the time
per query alone and in batches of 4 (what 32 concurrent clients hand the search on a CPU).
Writes benchmarks/results/own_bank.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def per_query_ms(index, queries: np.ndarray, batch: int) -> tuple[float, float]:
    """p50 and p99 of milliseconds per query, searching `batch` queries per call."""
    times = []
    for start in range(0, len(queries) - batch + 1, batch):
        began = time.perf_counter()
        index.nearest(queries[start : start + batch], 10)
        times.append((time.perf_counter() - began) * 1000.0 / batch)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "bundles" / "tweets")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)

    from contract.bundle import load_bundle
    from contract.index import AtomIndex, choose_spec, set_threads
    from service.runtime import Runtime
    from training.data import load_dataset

    set_threads(1)
    bundle = load_bundle(args.bundle)
    runtime = Runtime(bundle, device="cpu", precision="fp32")
    texts = load_dataset(bundle.manifest.training.dataset).validation.texts[: args.queries]
    items = runtime.prepare(texts)
    queries = np.concatenate([np.stack([r.embedding for r in runtime.run(items[i : i + 32], record=False)])
                              for i in range(0, len(items), 32)])
    bank = bundle.atoms
    count, dim = bank.embedding.shape
    rows = []
    exact_rows = None
    for kind in ("flat", "ivf", "hnsw"):
        spec = choose_spec(count, dim, kind)
        began = time.perf_counter()
        index = AtomIndex(bank.embedding, bank.radius, bank.charge, spec=spec)
        build_s = time.perf_counter() - began
        found, _ = index.nearest(queries, 10)
        if exact_rows is None:
            exact_rows = found
        recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found.tolist(), exact_rows.tolist())]))
        single, batch4 = per_query_ms(index, queries, 1), per_query_ms(index, queries, 4)
        rows.append({"index": kind, "params": spec.params, "build_s": build_s, "recall_at_10": recall,
                     "single_p50_ms": single[0], "single_p99_ms": single[1],
                     "batch4_p50_ms_per_query": batch4[0], "batch4_p99_ms_per_query": batch4[1]})
        print(rows[-1], flush=True)
    result = {"command": "python benchmarks/own_bank.py " + " ".join(argv or sys.argv[1:]),
              "bundle": f"{bundle.manifest.name} {bundle.manifest.version}", "atoms": count, "dim": dim,
              "queries": len(queries), "split": "validation", "faiss_threads": 1, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "own_bank.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# The bundle's own bank: {count:,} atoms x {dim} ({result['bundle']})", "",
             f"`{result['command'].strip()}`: {len(queries)} validation tweets embedded by the bundle as queries, "
             "one FAISS thread.", "",
             "| index | params | build s | recall@10 | p50 ms / query (alone) | p99 | p50 ms / query (batches of 4) | p99 |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items()) or "-"
        lines.append(f"| {r['index']} | {params} | {r['build_s']:.1f} | {r['recall_at_10']:.3f} | "
                     f"{r['single_p50_ms']:.2f} | {r['single_p99_ms']:.2f} | {r['batch4_p50_ms_per_query']:.2f} | "
                     f"{r['batch4_p99_ms_per_query']:.2f} |")
    (args.out / "own_bank.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
