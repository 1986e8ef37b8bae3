"""Bank benchmark: exact vs approximate nearest-atom search at 10^4..10^6 atoms, and end to end.

    python benchmarks/bank.py search --embeddings runs/bench-bank/minilm_tweets.npz
    python benchmarks/bank.py e2e --bundle runs/bench-bank/bundle

Data (search): real all-MiniLM-L6-v2 embeddings (384 dims) of tweets (benchmarks/minilm_embed.py).
Queries are held-out tweets, never in a bank: one set of 500 chooses each index's search-time
setting (the smallest nprobe / ef_search whose recall@10 reaches TARGET_RECALL on them), another
500 are the ones every figure is reported on, so no setting is chosen on the queries it is
reported on. A bank of M atoms is the remaining real embeddings
(a subset when M is smaller) plus derived atoms: each a point between a real atom a and one of
its 10 nearest real neighbours b (a + t (b - a), t uniform), plus Gaussian noise whose size is
a's own nearest-neighbour distance, put back on the unit sphere. So the derived atoms fill the
real atoms' neighbourhoods at the real spread instead of forming separate clusters; the
table reports how close the nearest neighbours are (relative contrast: mean distance / nearest
distance; lower = harder) for the real atoms alone and for each bank.

Search goes through `contract.index.AtomIndex.search`, the served code path (FAISS candidates,
exact distances recomputed, energy not needed), one FAISS thread as the service runs it.
recall@10 = the share of the exact 10 nearest that the index returns. Latency per single
query and per batch of 32, p50/p99 over a bounded number of calls.

e2e: a bundle (any embedding size) and a bank of 10^5 atoms derived the same way from the
bundle's own atoms.npz; `python -m service --bank` on 127.0.0.1; sequential /v1/atomize
requests of one held-out text each, alternating neighbors=10 and neighbors=0 (the same request
otherwise); p50/p99 of each and their ratio.

The machine is shared (other jobs run on its 2 cores); the load average at start is recorded
next to the figures. Results: benchmarks/results/bank.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import faiss  # noqa: E402

from contract.index import HNSW_MAX_ATOMS, AtomIndex, IndexSpec, choose_spec, configure, set_threads  # noqa: E402

log = logging.getLogger("benchmarks.bank")
NEIGHBOURS = 10
TARGET_RECALL = 0.95  # recall@10 a search-time setting must reach on the tuning queries
RESULTS = ROOT / "benchmarks" / "results"


# ---- data ----------------------------------------------------------------------------------------


def normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def derive(real: np.ndarray, size: int, seed: int = 0, chunk: int = 100_000) -> np.ndarray:
    """`size` atoms: the real ones (a seeded subset if fewer are wanted), then derived ones."""
    rng = np.random.default_rng(seed)
    if size <= len(real):
        return real[np.sort(rng.choice(len(real), size, replace=False))]
    set_threads(None)
    rows, distance = AtomIndex(real, spec=IndexSpec("flat")).nearest(real, 11, exclude=np.arange(len(real)))
    rows, spread = rows[:, :10], distance[:, 0]  # 10 real neighbours; nearest distance = local spread
    out = np.empty((size, real.shape[1]), np.float32)
    out[: len(real)] = real
    dim = real.shape[1]
    for start in range(len(real), size, chunk):
        n = min(chunk, size - start)
        a = rng.integers(0, len(real), n)
        b = rows[a, rng.integers(0, 10, n)]
        t = rng.random(n, dtype=np.float32)[:, None]
        noise = rng.standard_normal((n, dim), dtype=np.float32) * (spread[a] / np.sqrt(dim))[:, None]
        out[start : start + n] = normalise(real[a] + t * (real[b] - real[a]) + noise)
    return out


def relative_contrast(bank: np.ndarray, queries: np.ndarray, exact_distance: np.ndarray, sample: int = 2000) -> float:
    """Median over queries of (mean distance to a bank sample) / (distance to the nearest atom).

    Queries with an identical atom in the bank (distance < 1e-4: tweets that differ only in case
    or spacing embed identically) are left out; `duplicate_share` reports them.
    """
    pick = np.random.default_rng(1).choice(len(bank), min(sample, len(bank)), replace=False)
    mean = np.linalg.norm(queries[:, None, :] - bank[pick][None], axis=2).mean(1)
    keep = exact_distance[:, 0] >= 1e-4
    return float(np.median(mean[keep] / exact_distance[keep, 0]))


def duplicate_share(exact_distance: np.ndarray) -> float:
    return round(float((exact_distance[:, 0] < 1e-4).mean()), 4)


# ---- measurements ---------------------------------------------------------------------------------


def percentiles(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000.0
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def search_latency(index: AtomIndex, queries: np.ndarray, singles: int, batches: int) -> dict:
    zeros = np.zeros(32, np.float32)
    single, batch = [], []
    for i in range(singles):
        q = queries[i % len(queries)][None]
        started = time.perf_counter()
        index.search(q, zeros[:1], zeros[:1], [NEIGHBOURS], ["distance"])
        single.append(time.perf_counter() - started)
    for i in range(batches):
        q = queries[(np.arange(32) + 32 * i) % len(queries)]
        started = time.perf_counter()
        index.search(q, zeros, zeros, [NEIGHBOURS] * 32, ["distance"] * 32)
        batch.append(time.perf_counter() - started)
    return {"single": percentiles(single), "batch32": percentiles(batch) if batch else None}


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / truth.shape[1] for a, b in zip(found.tolist(), truth.tolist())]))


def choose_setting(sweep: list[dict], target: float = TARGET_RECALL) -> dict | None:
    """The cheapest search-time setting whose recall on the tuning queries reaches `target`.

    Settings are ordered by their value (a larger nprobe or ef_search searches more); when none
    reaches the target, the one with the highest tuning recall. Reported-query figures play no part.
    """
    if not sweep:
        return None
    key = lambda point: [v for k, v in point.items() if k in ("ef_search", "nprobe")]  # noqa: E731
    reaching = [p for p in sorted(sweep, key=key) if p["tune_recall_at_10"] >= target]
    return reaching[0] if reaching else max(sweep, key=lambda p: p["tune_recall_at_10"])


def measure_index(bank: np.ndarray, queries: np.ndarray, spec: IndexSpec, truth: np.ndarray, singles: int,
                  batches: int, sweep: list[dict] | None = None,
                  tuning: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    set_threads(None)  # builds use every core, as `atomize index` does
    started = time.perf_counter()
    index = AtomIndex(bank, spec=spec)
    build_s = time.perf_counter() - started
    set_threads(1)  # searches as served
    rows = np.stack([index.search(q[None], np.zeros(1), np.zeros(1), [NEIGHBOURS], ["distance"])[0].rows
                     for q in queries])
    result = {"kind": spec.kind, "params": spec.params, "build_s": round(build_s, 2),
              "index_bytes": int(faiss.serialize_index(index.faiss).nbytes), "recall_at_10": round(recall(rows, truth), 4),
              **search_latency(index, queries, singles, batches)}
    result["sweep"] = []
    for params in sweep or []:  # search-time settings on the same built index
        tuned = IndexSpec(spec.kind, {**spec.params, **params})
        probe = AtomIndex(bank, spec=tuned, faiss_index=index.faiss)
        configure(index.faiss, tuned)
        rows = probe.nearest(queries, NEIGHBOURS)[0]
        point = {**params, "recall_at_10": round(recall(rows, truth), 4)}
        if tuning is not None:
            point["tune_recall_at_10"] = round(recall(probe.nearest(tuning[0], NEIGHBOURS)[0], tuning[1]), 4)
        result["sweep"].append({**point, **search_latency(probe, queries, singles // 2, 0)["single"]})
    if tuning is not None and result["sweep"]:
        result["chosen"] = {k: v for k, v in choose_setting(result["sweep"]).items() if k in ("ef_search", "nprobe")}
    configure(index.faiss, spec)
    log.info("%s %s: %s", spec.kind, spec.params, {k: v for k, v in result.items() if k != "sweep"})
    return result


def run_search(args) -> dict:
    data = np.load(args.embeddings)
    real = normalise(data["embedding"])
    rng = np.random.default_rng(0)
    order = rng.permutation(len(real))
    queries = real[order[: args.queries]]
    tuning = real[order[args.queries : args.queries + args.tune_queries]]
    base = real[order[args.queries + args.tune_queries :]]
    results = {"data": {"source": str(args.embeddings), "real_atoms": len(base), "queries": len(queries),
                        "tune_queries": len(tuning), "target_recall": TARGET_RECALL, "dim": int(real.shape[1])},
               "sizes": []}
    set_threads(None)
    truth_real, distance_real = AtomIndex(base, spec=IndexSpec("flat")).nearest(queries, NEIGHBOURS)
    results["data"]["relative_contrast_real"] = round(relative_contrast(base, queries, distance_real), 3)
    results["data"]["nearest_distance_median_real"] = round(float(np.median(distance_real[:, 0])), 4)
    results["data"]["duplicate_share_real"] = duplicate_share(distance_real)
    for size in args.sizes:
        bank = derive(base, size)
        set_threads(None)
        exact = AtomIndex(bank, spec=IndexSpec("flat"))
        truth, distance = exact.nearest(queries, NEIGHBOURS)
        tune_truth = exact.nearest(tuning, NEIGHBOURS)[0]
        del exact
        row = {"atoms": size, "relative_contrast": round(relative_contrast(bank, queries, distance), 3),
               "duplicate_share": duplicate_share(distance),
               "nearest_distance_median": round(float(np.median(distance[:, 0])), 4), "indexes": []}
        exact_singles = max(10, min(args.singles, int(args.singles * 1e4 / size)))  # ~150 ms a query at 10^6
        row["indexes"].append(measure_index(bank, queries, IndexSpec("flat"), truth, exact_singles,
                                            max(3, exact_singles // 10)))
        for kind in args.kinds:
            if kind == "hnsw" and size > args.hnsw_max:
                log.info("no HNSW at %d atoms (past --hnsw-max; the service indexes such a bank with IVF)", size)
                continue
            spec = choose_spec(size, bank.shape[1], kind)
            sweep = ([{"ef_search": ef} for ef in args.ef_sweep] if kind == "hnsw"
                     else [{"nprobe": p} for p in args.nprobe_sweep if p <= spec.params["nlist"]])
            row["indexes"].append(measure_index(bank, queries, spec, truth, args.singles, args.batches, sweep,
                                                tuning=(tuning, tune_truth)))
        results["sizes"].append(row)
        del bank
        write_report({"search": {**results, "load_average_1m": args.load}}, args.out)  # keep what is done
    return results


# ---- end to end -----------------------------------------------------------------------------------


def run_e2e(args) -> dict:
    import httpx

    from contract.bank import BankArrays, BuiltWith, SourceInfo, write_bank
    from contract.index import build_faiss
    from common import running_service
    from contract.bundle import load_bundle
    from training.datasets.builtin import load_tweets

    bundle = load_bundle(args.bundle)
    own = bundle.atoms
    real = normalise(own.embedding)
    bank_dir = Path(args.work) / "bank-e2e"
    embedding = derive(real, args.atoms)
    rng = np.random.default_rng(2)
    pick = rng.integers(0, len(own), args.atoms)  # radius and charge of a real atom, for the energies
    arrays = BankArrays(embedding=embedding, radius=own.radius[pick], charge=own.charge[pick],
                        label=np.full(args.atoms, -1), id=np.arange(args.atoms))
    spec = choose_spec(args.atoms, embedding.shape[1])
    set_threads(None)
    started = time.perf_counter()
    index = build_faiss(embedding, spec)
    build_s = time.perf_counter() - started
    lines = [(json.dumps({"text": f"atom {i}"}) + "\n").encode() for i in range(args.atoms)]
    write_bank(bank_dir, arrays, lines, built_with=BuiltWith(name=bundle.manifest.name, version=bundle.manifest.version,
                                                            digest=bundle.digest),
               label_names=[], metadata_fields=["text"], source=SourceInfo(file="derived", format="npz",
               rows_read=args.atoms, rows_skipped=0), spec=spec, faiss_index=index)
    texts = list(load_tweets(split_seed=0, limit=None).test.texts)[: args.requests]
    times: dict[int, list[float]] = {0: [], NEIGHBOURS: []}
    with running_service(bundle.path, "--bank", str(bank_dir), log_path=Path(args.work) / "e2e.log") as url:
        with httpx.Client(base_url=url, timeout=30) as client:
            for i in range(args.warmup + len(texts)):
                for k in (NEIGHBOURS, 0) if i % 2 else (0, NEIGHBOURS):  # alternate which goes first
                    body = {"inputs": [texts[i % len(texts)]], "neighbors": k, "include": ["embedding", "neighbors"]}
                    started = time.perf_counter()
                    response = client.post("/v1/atomize", json=body)
                    elapsed = time.perf_counter() - started
                    assert response.status_code == 200, response.text
                    if i >= args.warmup:
                        times[k].append(elapsed)
            served = client.get("/v1/model").json()["bank"]
    with_n, without = percentiles(times[NEIGHBOURS]), percentiles(times[0])
    result = {"bundle": f"{bundle.manifest.name} {bundle.manifest.version}", "embedding_dim": bundle.manifest.embedding_dim,
              "bundle_atoms": len(own), "bank": served, "index_build_s": round(build_s, 2), "requests": len(texts),
              "with_neighbors": with_n, "without_neighbors": without,
              "ratio_p50": round(with_n["p50_ms"] / without["p50_ms"], 3),
              "ratio_p99": round(with_n["p99_ms"] / without["p99_ms"], 3)}
    log.info("e2e: %s", result)
    return result


# ---- report ---------------------------------------------------------------------------------------


def write_report(results: dict, out: Path) -> None:
    from common import machine

    out.mkdir(parents=True, exist_ok=True)
    path = out / "bank.json"
    merged = json.loads(path.read_text()) if path.is_file() else {}
    merged.update(results)
    merged["machine"] = machine("CPUExecutionProvider")  # the machine of the latest part
    path.write_text(json.dumps(merged, indent=2) + "\n")
    (out / "bank.md").write_text(render(merged))


def render(results: dict) -> str:
    m = results.get("machine", {})
    lines = ["# Bank benchmark", "",
             f"`python benchmarks/bank.py` on {m.get('cpu')} ({m.get('cores')} cores), Python {m.get('python')}, "
             f"faiss {faiss.__version__}. The machine is shared: the load average at the start of each part is "
             "recorded below; latencies are what one search thread got.", ""]
    search = results.get("search")
    if search:
        d = search["data"]
        lines += [f"Load average at start: {search.get('load_average_1m')}. Data: {d['real_atoms']} real "
                  f"all-MiniLM-L6-v2 embeddings of tweets ({d['dim']} dims) plus derived atoms (see the script's "
                  f"docstring); {d['queries']} held-out tweets as the queries reported on, {d.get('tune_queries', 0)} "
                  f"other held-out tweets as the queries that choose each search-time setting (the cheapest with "
                  f"recall@10 >= {d.get('target_recall', TARGET_RECALL)} on them). Relative contrast of the real atoms "
                  f"alone: {d['relative_contrast_real']} (median over queries of mean distance / nearest distance; "
                  f"lower = harder; queries with an identical atom left out: {d.get('duplicate_share_real')} of them "
                  "for the real atoms).", *([f"({d['contrast_note']}.)"] if d.get("contrast_note") else []), "",
                  "nearest d = median distance from a query to its nearest atom (unit vectors); "
                  f"{d.get('nearest_distance_median_real', '-')} over the real atoms alone.", "",
                  "| atoms | contrast | nearest d | index | params | build s | index MB | recall@10 | single p50 ms "
                  "| single p99 ms | batch 32 p50 ms | batch 32 p99 ms |",
                  "|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for row in search["sizes"]:
            for ix in row["indexes"]:
                params = ", ".join(f"{k}={v}" for k, v in ix["params"].items()) or "-"
                lines.append(f"| {row['atoms']:,} | {row['relative_contrast']} | {row['nearest_distance_median']} "
                             f"| {ix['kind']} | {params} | {ix['build_s']} "
                             f"| {ix['index_bytes'] / 2**20:.0f} | {ix['recall_at_10']} | {ix['single']['p50_ms']} "
                             f"| {ix['single']['p99_ms']} | {ix['batch32']['p50_ms']} | {ix['batch32']['p99_ms']} |")
        lines += ["", "Search-time settings on the same built index (single queries; **bold** = chosen on the "
                  "tuning queries; recall@10 and latency on the reported queries):", "",
                  "| atoms | index | setting | tuning recall@10 | recall@10 | p50 ms | p99 ms |",
                  "|---:|---|---|---:|---:|---:|---:|"]
        for row in search["sizes"]:
            for ix in row["indexes"]:
                for point in ix.get("sweep", []):
                    values = {k: v for k, v in point.items() if k in ("ef_search", "nprobe")}
                    setting = ", ".join(f"{k}={v}" for k, v in values.items())
                    if values == ix.get("chosen"):
                        setting = f"**{setting}**"
                    lines.append(f"| {row['atoms']:,} | {ix['kind']} | {setting} | {point.get('tune_recall_at_10', '-')} "
                                 f"| {point['recall_at_10']} | {point['p50_ms']} | {point['p99_ms']} |")
    e2e = results.get("e2e")
    if e2e:
        lines += ["", "## End to end", "",
                  f"Load average at start: {e2e.get('load_average_1m')}. Bundle {e2e['bundle']} (embedding "
                  f"{e2e['embedding_dim']}); bank of {e2e['bank']['atoms']:,} atoms ({e2e['bank']['search']}, derived "
                  f"from the bundle's {e2e['bundle_atoms']} atoms; index built in {e2e['index_build_s']} s); "
                  f"{e2e['requests']} sequential /v1/atomize requests of one held-out tweet each, neighbors=10 and "
                  "neighbors=0 alternating.", "",
                  "| request | p50 ms | p99 ms |", "|---|---:|---:|",
                  f"| with 10 neighbours | {e2e['with_neighbors']['p50_ms']} | {e2e['with_neighbors']['p99_ms']} |",
                  f"| without neighbours | {e2e['without_neighbors']['p50_ms']} | {e2e['without_neighbors']['p99_ms']} |",
                  f"| ratio | {e2e['ratio_p50']} | {e2e['ratio_p99']} |"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="part", required=True)
    search = sub.add_parser("search")
    search.add_argument("--embeddings", type=Path, default=Path("runs/bench-bank/minilm_tweets.npz"))
    search.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 300_000, 1_000_000])
    search.add_argument("--kinds", nargs="+", default=["hnsw", "ivf"])
    search.add_argument("--hnsw-max", type=int, default=HNSW_MAX_ATOMS, help="largest bank given an HNSW index")
    search.add_argument("--ef-sweep", type=int, nargs="*", default=[32, 48, 64, 96, 128, 256],
                        help="HNSW ef_search values to try")
    search.add_argument("--nprobe-sweep", type=int, nargs="*", default=[16, 24, 32, 40, 48, 64, 96, 128],
                        help="IVF nprobe values")
    search.add_argument("--queries", type=int, default=500, help="queries every figure is reported on")
    search.add_argument("--tune-queries", type=int, default=500, help="other queries that choose each setting")
    search.add_argument("--singles", type=int, default=300)
    search.add_argument("--batches", type=int, default=20)
    e2e = sub.add_parser("e2e")
    e2e.add_argument("--bundle", type=Path, default=Path("runs/bench-bank/bundle"))
    e2e.add_argument("--atoms", type=int, default=100_000)
    e2e.add_argument("--requests", type=int, default=300)
    e2e.add_argument("--warmup", type=int, default=20)
    e2e.add_argument("--work", type=Path, default=Path("runs/bench-bank"))
    for p in (search, e2e):
        p.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    args.load = round(os.getloadavg()[0], 2)  # other work on the machine skews the figures
    if args.part == "search":
        result = {"search": {**run_search(args), "load_average_1m": args.load}}
    else:
        result = {"e2e": {**run_e2e(args), "load_average_1m": args.load}}
    write_report(result, args.out)
    print((args.out / "bank.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
