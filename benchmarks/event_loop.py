"""Worst /healthz latency while the largest allowed request is in flight, before and after.

    python benchmarks/event_loop.py --bundle BUNDLE [--before DIR]

Two largest requests (each just under the default max_request_bytes of 8 MiB): one text of
~8 MB, and 256 texts of 32 KB. While one is in flight, a second client polls /healthz every
10 ms on its own connection; the worst poll latency is how long the event loop was blocked.
Results: benchmarks/results/event_loop.{md,json}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import httpx
import numpy as np

from common import ROOT, describe, machine, ms, start_service, stop_service, write_results

LIMIT_BYTES = 8 * 1024 * 1024


def words_text(rng: np.random.Generator, chars: int) -> str:
    vocab = ["what", "a", "great", "day", "the", "service", "is", "slow", "today", "love", "it", "not", "at", "all"]
    text = " ".join(rng.choice(vocab, chars // 3))
    return text[:chars]


def bodies() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    one = json.dumps({"inputs": [words_text(rng, LIMIT_BYTES - 64)], "include": ["embedding"]}).encode()
    many = json.dumps({"inputs": [words_text(rng, 32 * 1024 - 16) for _ in range(256)],
                       "include": ["embedding"]}).encode()
    assert len(one) <= LIMIT_BYTES and len(many) <= LIMIT_BYTES, (len(one), len(many))
    return {"one text of 8 MB": one, "256 texts of 32 KB": many}


async def measure(url: str, body: bytes) -> dict:
    async with httpx.AsyncClient(timeout=120) as big, httpx.AsyncClient(timeout=120) as probe:
        await probe.get(f"{url}/healthz")  # connection open before the big request starts
        started = time.perf_counter()
        task = asyncio.create_task(big.post(f"{url}/v1/atomize", content=body,
                                            headers={"content-type": "application/json"}))
        worst = 0.0
        polls = 0
        while not task.done():
            sent = time.perf_counter()
            await probe.get(f"{url}/healthz")
            worst = max(worst, time.perf_counter() - sent)
            polls += 1
            await asyncio.sleep(0.01)
        response = await task
        return {"status": response.status_code, "request_seconds": time.perf_counter() - started,
                "healthz_worst_seconds": worst, "healthz_polls": polls,
                "truncated": [r.get("truncated") for r in response.json().get("results", [])][:1]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "bundles" / "tweets")
    parser.add_argument("--before", type=Path, help="an older checkout to measure too")
    args = parser.parse_args(argv)
    sides = ([("before", args.before)] if args.before else []) + [("after", ROOT)]
    payloads = bodies()
    results: dict = {"machine": machine(), "bundle": str(args.bundle), "rows": []}
    for side, code in sides:
        process, url = start_service(args.bundle, code=code, log_path=Path(f"/tmp/event_loop_{side}.log"))
        try:
            for name, body in payloads.items():
                row = {"side": side, "request": name, "bytes": len(body), **asyncio.run(measure(url, body))}
                results["rows"].append(row)
                print(row)
        finally:
            stop_service(process)
    lines = ["# Event loop: worst /healthz latency while the largest allowed request is in flight", "",
             "`python benchmarks/event_loop.py --bundle BUNDLE --before DIR` (before = the commit before the",
             "hardening, after = this code; same machine, same bundle, default settings).", "",
             "| code | request | status | request time (ms) | worst /healthz (ms) | /healthz polls |",
             "|---|---|---|---|---|---|"]
    for row in results["rows"]:
        lines.append(f"| {row['side']} | {row['request']} ({row['bytes']} bytes) | {row['status']} | "
                     f"{ms(row['request_seconds'])} | {ms(row['healthz_worst_seconds'])} | {row['healthz_polls']} |")
    lines += ["", f"Machine: {describe(results['machine'])}. Bundle: `{args.bundle.name}`."]
    write_results("event_loop", results, "\n".join(lines))


if __name__ == "__main__":
    main()
