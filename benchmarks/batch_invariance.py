"""The same input gets the same atom under load, whoever shares its batch (issue 22).

    python benchmarks/batch_invariance.py [--bundle bundles/tweets] [--requests 10000] [--clients 128]

For each system: every distinct text is first sent alone, one request at a time (the reference);
then `--requests` requests of 1 to 8 texts (drawn with a fixed seed from `--texts` tweets of the
test split) come from `--clients` concurrent keep-alive connections, so the batcher mixes texts of
different requests in its batches. Every answer is compared with the text's reference: embeddings
off by more than 1e-5 (max |difference|), neighbour id lists and role lists that differ.

Systems: this service with the bundle's default precision on a CPU (the static int8 copy) and
with fp32; the same bundle with a dynamic int8 copy (what bundles exported before this change
hold), served by this service (one input per call) and by the service before this change
(`--before`, a commit of this repository: it batches that copy, as it did). Results:
benchmarks/results/batch_invariance.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, RawClient, code_at, machine, start_service, stop_service, write_results  # noqa: E402

TOLERANCE = 1e-5
BEFORE_COMMIT = "e9f5b56"  # main before issue 22: dynamic int8, batched
INCLUDE = ["embedding", "components", "neighbors"]


def body(texts: list[str]) -> bytes:
    return json.dumps({"inputs": texts, "neighbors": 5, "include": INCLUDE}).encode()


def answers(payload: bytes) -> list[tuple[np.ndarray, tuple[str, ...], tuple[int, ...]]]:
    """(embedding, roles, neighbour ids) per input of one /v1/atomize response."""
    return [(np.asarray(r["embedding"], dtype=np.float32), tuple(c["role"] for c in r["components"]),
             tuple(n["id"] for n in r["neighbors"])) for r in json.loads(payload)["results"]]


async def references(url: str, texts: list[str]) -> dict[str, tuple]:
    host, port = url.removeprefix("http://").split(":")
    client = RawClient(host, int(port))
    out = {}
    for text in texts:
        status, payload = await client.exchange("/v1/atomize", body([text]))
        if status != 200:
            raise RuntimeError(f"reference for {text!r}: HTTP {status} {payload[:200]!r}")
        out[text] = answers(payload)[0]
    await client.close()
    return out


async def load(url: str, requests: list[list[str]], clients: int, time_limit_s: float) -> dict:
    """Closed loop: each client sends its next request when its last one is answered; stops when
    all requests are sent or the time limit passes."""
    host, port = url.removeprefix("http://").split(":")
    queue = list(reversed(range(len(requests))))
    received: list[tuple[int, int, bytes]] = []
    errors = 0
    deadline = time.monotonic() + time_limit_s

    async def client_loop() -> None:
        nonlocal errors
        client = RawClient(host, int(port))
        while queue and time.monotonic() < deadline:
            index = queue.pop()
            try:
                status, payload = await client.exchange("/v1/atomize", body(requests[index]))
                received.append((index, status, payload))
            except (OSError, asyncio.IncompleteReadError):
                errors += 1
        await client.close()

    started = time.perf_counter()
    await asyncio.gather(*(client_loop() for _ in range(clients)))
    return {"seconds": time.perf_counter() - started, "received": received, "errors": errors}


def compare(reference: dict, requests: list[list[str]], received: list) -> dict:
    counts = {"answers": 0, "embeddings_off": 0, "neighbor_lists_differ": 0, "role_lists_differ": 0, "non_200": 0}
    worst = 0.0
    for index, status, payload in received:
        if status != 200:
            counts["non_200"] += 1
            continue
        for text, (embedding, roles, neighbors) in zip(requests[index], answers(payload)):
            ref_embedding, ref_roles, ref_neighbors = reference[text]
            difference = float(np.abs(embedding - ref_embedding).max())
            worst = max(worst, difference)
            counts["answers"] += 1
            counts["embeddings_off"] += difference > TOLERANCE
            counts["neighbor_lists_differ"] += neighbors != ref_neighbors
            counts["role_lists_differ"] += roles != ref_roles
    return {**counts, "max_abs_difference": worst}


def dynamic_int8_bundle(bundle: Path, out: Path) -> Path:
    """The bundle with the int8 copy that bundles exported before this change hold."""
    from contract.bundle import INT8_FILE, Manifest, checksum_tree
    from training.precision import write_int8_dynamic

    shutil.copytree(bundle, out)
    write_int8_dynamic(out / "encoder.onnx", out / INT8_FILE)
    manifest = Manifest.model_validate_json((out / "manifest.json").read_text())
    int8 = {k: v for k, v in manifest.precisions.get("int8", {}).items() if k not in ("scheme", "batch_max_abs_diff")}
    manifest.model_copy(update={"precisions": {**manifest.precisions, "int8": int8}, "files": checksum_tree(out)}).write(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=ROOT / "bundles" / "tweets")
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=128)
    parser.add_argument("--texts", type=int, default=2000, help="distinct tweets the requests draw from")
    parser.add_argument("--time-limit", type=float, default=600.0, help="seconds per load, at most")
    parser.add_argument("--before", default=BEFORE_COMMIT, help="commit of the service before this change ('' to skip)")
    parser.add_argument("--out", default="batch_invariance")
    args = parser.parse_args(argv)

    from peers import test_texts, wait_for_bank_index

    texts = test_texts(args.texts)
    rng = np.random.default_rng(0)
    requests = [[texts[i] for i in rng.integers(0, len(texts), rng.integers(1, 9))] for _ in range(args.requests)]
    work = Path(tempfile.mkdtemp(prefix="batch-invariance-"))
    dynamic = dynamic_int8_bundle(args.bundle, work / "dynamic-int8")
    systems = [
        ("int8 static (default)", ROOT, args.bundle, []),
        ("fp32", ROOT, args.bundle, ["--precision", "fp32"]),
        ("int8 dynamic, one input per call", ROOT, dynamic, []),
    ]
    if args.before:
        before = code_at(args.before, work / "before")
        systems.append((f"int8 dynamic, batched (before, {args.before})", before, dynamic, []))

    rows = []
    for name, code, bundle, flags in systems:
        process, url = start_service(bundle, *flags, code=code, log_path=work / f"{len(rows)}.log")
        try:
            runtime = wait_for_bank_index(url)["runtime"]  # the bank's index must not change between the phases
            reference = asyncio.run(references(url, sorted(set(texts))))
            load_before = os.getloadavg()[0]
            result = asyncio.run(load(url, requests, args.clients, args.time_limit))
        finally:
            stop_service(process)
        counts = compare(reference, requests, result["received"])
        row = {"system": name, "model_file": runtime["model_file"], "batching": runtime.get("batching", "batched"),
               "requests": len(result["received"]), "errors": result["errors"],
               "items_per_s": counts["answers"] / result["seconds"], "seconds": result["seconds"],
               "load_average_before": load_before, **counts}
        rows.append(row)
        print(json.dumps(row), flush=True)
    shutil.rmtree(work, ignore_errors=True)

    default = rows[0]["items_per_s"]
    lines = [
        "# The same input, the same atom, under load",
        "",
        f"`python benchmarks/batch_invariance.py`: {args.requests} requests of 1 to 8 texts (from {args.texts} test tweets) "
        f"at {args.clients} clients against `{args.bundle.name}` on the CPU, every answer compared with the same text "
        f"sent alone. Off: max |embedding difference| > {TOLERANCE:g}. {os.cpu_count()} cores, the load process on "
        "the same cores; load average before each load in the table.",
        "",
        "| system | requests | answers | embeddings off | neighbour lists differ | role lists differ | max difference | items/s | x default | load avg |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(f"| {row['system']} | {row['requests']} | {row['answers']} | {row['embeddings_off']} | "
                     f"{row['neighbor_lists_differ']} | {row['role_lists_differ']} | {row['max_abs_difference']:.1e} | "
                     f"{row['items_per_s']:.0f} | {row['items_per_s'] / default:.2f} | {row['load_average_before']:.1f} |")
    write_results(args.out, {"machine": machine(), "requests": args.requests, "clients": args.clients,
                             "texts": args.texts, "rows": rows}, "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
