"""Serving benchmark: the service under concurrent load against raw ONNX Runtime, same inputs, same run.

    python benchmarks/serve.py [--bundle bundles/tweets] [--quick] [--device cuda] [--clients 1,32,128]

1. Served: `python -m service` (uvicorn on 127.0.0.1, a free port) with batching on (defaults)
   and off (`--max-batch-items 1`); a separate load process keeps `concurrency` requests of one
   input each in flight (closed loop), bounded by a request count and a duration.
2. Raw, for each served row, with the server stopped: this process runs the bundle's ONNX session
   on pre-tokenized inputs cut into batches by the service's own policy (benchmarks/batch_padding.py)
   from rounds of the size the server saw (mean items per round, from its /metrics), back to back:
   what the model alone gives under the same batching.
3. Results: items/s, p50/p99 latency, mean round and batch sizes seen by the server, the served/raw
   ratio; written to benchmarks/results/serve.{md,json} with the machine description.

The load process runs on the same machine, so on a small CPU it competes with the server for
cores; the ratio is the honest figure for "this service on this machine".
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIG = 32  # inputs per request in the row that batches on the client side
sys.path.insert(0, str(ROOT))  # run as a script from anywhere
sys.path.insert(0, str(ROOT / "benchmarks"))

from batch_padding import items_per_s, policy_batches  # noqa: E402
from common import describe, machine, running_service  # noqa: E402
from loadgen import mean_between, run_load, scrape  # noqa: E402

log = logging.getLogger("benchmarks.serve")


# ---- inputs ------------------------------------------------------------------------------------


def benchmark_inputs(bundle, count: int, seed: int = 0) -> tuple[list, str]:
    """Inputs as a client sends them: the dataset's test split when it loads, else synthetic."""
    spec = bundle.manifest.input
    rng = np.random.default_rng(seed)
    try:
        from training.data import load_dataset

        split = load_dataset(bundle.manifest.training.dataset).test
        rows = rng.permutation(len(split.labels))[:count]
        if spec.modality == "text":
            return [split.texts[i] for i in rows], f"{bundle.manifest.training.dataset} test split"
        values = np.asarray(split.inputs)[rows]
        if spec.preprocess.get("kind") == "patches":
            from contract.preprocess import unpatchify

            values = unpatchify(values, spec.preprocess["image_shape"], spec.preprocess["patch_shape"])
            values = values.reshape(len(rows), -1)
        return values.tolist(), f"{bundle.manifest.training.dataset} test split"
    except Exception as exc:  # no training extras, or a user dataset that is not on this machine
        log.info("dataset not available (%s); using synthetic inputs", exc)
    if spec.modality == "text":
        from contract.preprocess import load_tokenizer

        vocab = [t for t in load_tokenizer(bundle.tokenizer_path).get_vocab() if t.isalnum()]
        lengths = rng.integers(4, spec.max_components + 1, count)
        return [" ".join(rng.choice(vocab, n)) for n in lengths], "synthetic (random vocabulary words)"
    if spec.preprocess.get("kind") == "patches":
        height, width = spec.preprocess["image_shape"]
        return rng.uniform(0, 1, (count, height * width)).round(3).tolist(), "synthetic (random pixels)"
    return rng.normal(size=(count, spec.max_components, spec.component_dim)).round(3).tolist(), "synthetic"


# ---- the server and the load process -----------------------------------------------------------


def served_point(url: str, bodies_path: Path, concurrency: int, duration_s: float, max_requests: int,
                 items_per_request: int = 1) -> dict:
    """One load level from a separate process, with the server's mean round and batch sizes meanwhile."""
    before = scrape(url)
    result = run_load(url, "/v1/atomize", bodies_path, concurrency, items_per_request, duration_s, max_requests)
    after = scrape(url)
    result["mean_round_items"] = mean_between(after, before, "atom_round_items")
    result["mean_batch_items"] = mean_between(after, before, "atom_batch_items")
    return result


def raw_runtime(bundle, info: dict, **options):
    """The bundle's model in this process with the served model's intra-op threads per worker
    (`info`: its /v1/model), so that raw runs as the service's workers do."""
    from service.runtime import Runtime

    return Runtime(bundle, threads=info["runtime"].get("threads_per_worker", 0), **options)


def in_flight(workers: int, clients: int, inputs_per_request: int) -> int:
    """The workers a load can keep busy: no more batches run at once than the items in flight
    (one client sending one input at a time never has two batches)."""
    return max(1, min(workers, clients * inputs_per_request))


def raw_for(runtime, items: list, row: dict, batching: dict, seconds: float, cache: dict, workers: int = 1) -> float:
    """Items/s of ONNX Runtime alone on the batches the service's policy cuts from rounds of the
    size the server saw for this row, `workers` batches at once as the service runs them."""
    round_items = max(1, round(row["mean_round_items"] or 1))
    cache_key = (round_items, batching["max_batch_items"], batching["max_batch_padding"], workers)
    if cache_key not in cache:
        padding = float("inf") if batching["max_batch_padding"] is None else batching["max_batch_padding"]
        feeds = policy_batches(runtime, items, round_items, padding, batching["max_batch_items"],
                               batching["max_batch_components"])
        cache[cache_key] = items_per_s(runtime, feeds, seconds, workers)
    row.update(raw_round_items=round_items, raw_workers=workers)
    return cache[cache_key]


# ---- the report ------------------------------------------------------------------------------------


def write_report(results: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "serve.json").write_text(json.dumps(results, indent=2) + "\n")
    m, b = results["machine"], results["bundle"]
    lines = [
        "# Serving benchmark", "",
        f"`{results['command']}` on "
        f"{describe(m)}.", "",
        f"Bundle `{b['name']}` {b['version']}, `{b['model_file']}` ({b['modality']}, embedding {b['embedding_dim']}, bank of "
        f"{b['bank_atoms']} atoms); inputs: {results['inputs']['source']}, {results['inputs']['count']} distinct, "
        f"{results['inputs']['mean_components']:.1f} components on average. One input per request unless the",
        "row says otherwise.", "",
        "| batching | response | concurrency | items/s | p50 ms | p99 ms | mean round | mean batch | raw items/s "
        "| served / raw |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["served"]:
        batch = f"{row['mean_batch_items']:.1f}" if row["mean_batch_items"] else "-"
        rounds = f"{row['mean_round_items']:.1f}" if row["mean_round_items"] else "-"
        p50 = f"{row['p50_ms']:.1f}" if row["p50_ms"] is not None else "-"
        p99 = f"{row['p99_ms']:.1f}" if row["p99_ms"] is not None else "-"
        lines.append(f"| {row['batching']} | {row['response']} | {row['concurrency']} | {row['items_per_s']:.0f} | "
                     f"{p50} | {p99} | {rounds} | {batch} | {row['raw_items_per_s']:.0f} | "
                     f"{row['served_over_raw']:.2f} |")
    lines += [
        "", "raw = ONNX Runtime alone, in this process with the servers stopped, on the batches the service's own",
        "policy cuts from rounds of the size the server saw for that row (mean round, from its /metrics), run by as",
        "many workers with as many threads each as the service's (`inference_workers`); served / raw",
        "is what HTTP, parsing, tokenizing, the batcher and the response cost on top of the model.",
        "`embedding` asks for the embedding only (`neighbors: 0`); `full` is the default response (composition,",
        "component roles and 5 neighbors by distance), so it adds the neighbor search and a larger JSON body.",
        "The load process (a minimal asyncio HTTP/1.1 client, one keep-alive connection per concurrent",
        "client) shares the machine's cores with the server.", "",
    ]
    (out_dir / "serve.md").write_text("\n".join(lines))


def providers() -> list[str]:
    import onnxruntime

    return onnxruntime.get_available_providers()


# ---- main ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=Path("bundles/tweets"))
    parser.add_argument("--quick", action="store_true", help="short runs, two concurrency levels")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--clients", help="comma-separated concurrency levels (default 1,8,32; --quick 1,8)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    levels = (1, 8) if args.quick else (1, 8, 32)
    if args.clients is not None:
        try:
            levels = tuple(int(c) for c in args.clients.split(","))
        except ValueError:
            parser.error(f"--clients takes whole numbers separated by commas, not {args.clients!r}")
        if not levels or min(levels) < 1:
            parser.error("--clients: every level is at least 1 client")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    import httpx

    from contract.bundle import BundleError, load_bundle
    from service.config import Settings
    from service.runtime import Runtime

    try:
        bundle = load_bundle(args.bundle)
    except BundleError as exc:
        log.error("cannot benchmark: %s", exc)
        return 1
    if args.device == "cuda":
        from contract.runner import CUDA, DeviceError, create_session

        try:  # the service's own start-up check: the provider listed, and working with this bundle
            if CUDA not in providers():
                raise DeviceError(f"ONNX Runtime here has no {CUDA} (providers: {', '.join(providers())})")
            create_session(bundle, "cuda")
        except DeviceError as exc:
            log.error("cannot benchmark on cuda: %s; install onnxruntime-gpu with its CUDA libraries, or run "
                      "--device cpu", exc)
            return 2
    defaults = Settings()
    duration_s, raw_s = (2.0, 1.5) if args.quick else (8.0, 4.0)
    inputs, source = benchmark_inputs(bundle, 64 if args.quick else 512)

    served = []
    with tempfile.TemporaryDirectory() as tmp:
        bodies = {}
        embedding_only = {"neighbors": 0, "include": ["embedding"]}
        for response, size, extra in (("embedding", 1, embedding_only), ("full", 1, {}),
                                      (f"embedding, {BIG} inputs/request", BIG, embedding_only)):
            bodies[response] = Path(tmp) / f"{len(bodies)}.jsonl"
            groups = (inputs[i : i + size] for i in range(0, len(inputs) - size + 1, size))
            bodies[response].write_text("\n".join(json.dumps({"inputs": group, **extra}) for group in groups))
        plans = [
            ("on", [], [("embedding", c) for c in levels] + [("full", levels[-1]),
                                                             (f"embedding, {BIG} inputs/request", 2)]),
            # a fixed wait for batches to fill, against the default continuous batching
            ("on, max_wait_ms=5", ["--max-wait-ms", "5"], [("embedding", levels[min(1, len(levels) - 1)])]),
            ("off", ["--max-batch-items", "1"], [("embedding", c) for c in levels]),
        ]
        for batching, flags, points in plans:
            log_path = Path(tmp) / f"server-{len(served)}.log"
            with running_service(args.bundle, *flags, device=args.device, log_path=log_path) as url:
                info = httpx.get(f"{url}/v1/model", timeout=10).json()
                policy = info["batching"]
                for response, concurrency in points:
                    size = BIG if "inputs/request" in response else 1
                    row = served_point(url, bodies[response], concurrency, duration_s, 50_000, size)
                    row.update(batching=batching, response=response, policy=policy, inputs_per_request=size,
                               workers=info["runtime"].get("workers", 1))
                    log.info("batching %s, %s, concurrency %d: %.0f items/s, p50 %.1f ms, p99 %.1f ms, batch %.1f",
                             batching, response, concurrency, row["items_per_s"], row["p50_ms"] or 0,
                             row["p99_ms"] or 0, row["mean_batch_items"] or 0)
                    served.append(row)
    # Raw, with every server stopped: the same policy on rounds of the size each row saw.
    runtime = raw_runtime(bundle, info, device=args.device, max_components_per_input=defaults.max_components_per_input)
    items = runtime.prepare(inputs)
    lengths = [item.length for item in items]
    cache: dict = {}
    for row in served:
        row["raw_items_per_s"] = raw_for(runtime, items, row, row["policy"], raw_s, cache,
                                         in_flight(row["workers"], row["concurrency"], row["inputs_per_request"]))
        row["served_over_raw"] = row["items_per_s"] / row["raw_items_per_s"]
    provider = runtime.provider

    manifest = bundle.manifest
    results = {
        "quick": args.quick,
        "command": "python benchmarks/serve.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(provider),
        "bundle": {"path": str(args.bundle), "name": manifest.name, "version": manifest.version,
                   "model_file": runtime.model_file,
                   "modality": manifest.input.modality, "embedding_dim": manifest.embedding_dim,
                   "bank_atoms": len(bundle.atoms)},
        "inputs": {"source": source, "count": len(inputs), "mean_components": float(np.mean(lengths))},
        "settings": defaults.model_dump(include={"max_batch_items", "max_batch_components", "max_wait_ms",
                                                 "max_batch_padding"}),
        "served": served,
    }
    write_report(results, args.out)
    log.info("wrote %s and %s", args.out / "serve.md", args.out / "serve.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
