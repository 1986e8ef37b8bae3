"""Overload: how fast the refusals (429) arrive next to the answers (200), at 256 clients.

    python benchmarks/overload.py --bundle BUNDLE [--before DIR] [--seconds 20] [--clients 256]

256 closed-loop clients (one load process, raw HTTP/1.1 keep-alive) each send one-input
/v1/atomize requests with the full default response, for a fixed time, against a service with a
queue of 64 items (`--max-queue-items 64 --max-inputs-per-request 64`). Rows: the code before
the hardening; this code with only the queue checked before parsing; this code with an admission
limit of 64 requests in flight (`--max-concurrent-requests 64`); then, with that limit, the
inference settings that decide how much of the 2 cores the event loop gets while the model runs:
one inference worker instead of the default's three, and the inference threads at nice 10 or
under SCHED_IDLE (`--inference-nice`). Target: p99 of the 429s at most a tenth of the p99 of
the 200s. Results: benchmarks/results/overload.{md,json} (`make bench-overload`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from common import ROOT, closed_loop, describe, machine, ms, percentile, start_service, stop_service, write_results

QUEUE = ("--max-queue-items", "64", "--max-inputs-per-request", "64")
TEXTS = ["what a great day", "the service is slow today", "love it", "not at all what I wanted, sadly",
         "good morning everyone", "this is the worst"]


async def load(port: int, clients: int, seconds: float, honor_retry_after: bool) -> dict[str, list[float]]:
    return await closed_loop(port, lambda i: json.dumps({"inputs": [TEXTS[i % len(TEXTS)]]}).encode(), clients, seconds,
                             pause_on_429_s=1.0 if honor_retry_after else 0.0)  # the service's Retry-After: 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "bundles" / "tweets")
    parser.add_argument("--before", type=Path, help="an older checkout to measure too")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=256)
    args = parser.parse_args(argv)
    admission = (*QUEUE, "--max-concurrent-requests", "64")
    runs = ([("before", args.before, QUEUE, False)] if args.before else []) + [
        ("after: queue checked before parsing", ROOT, QUEUE, False),
        ("after: + admission limit 64", ROOT, admission, False),
        ("after: + admission limit 64, inference_workers 1", ROOT, (*admission, "--inference-workers", "1"), False),
        ("after: + admission limit 64, inference_nice 10", ROOT, (*admission, "--inference-nice", "10"), False),
        ("after: + admission limit 64, inference_nice idle", ROOT, (*admission, "--inference-nice", "idle"), False),
    ] + ([("before, clients wait Retry-After", args.before, QUEUE, True)] if args.before else []) + [
        ("after: + admission limit 64, clients wait Retry-After", ROOT, admission, True),
    ]
    host = machine()  # the load average before the first run
    rows = []
    for name, code, flags, honor in runs:
        process, url = start_service(args.bundle, *flags, code=code, log_path=Path("/tmp/overload.log"))
        try:
            latencies = asyncio.run(load(int(url.rsplit(":", 1)[1]), args.clients, args.seconds, honor))
        finally:
            stop_service(process)
        row = {"run": name, "flags": list(flags), "honor_retry_after": honor, "seconds": args.seconds,
               "clients": args.clients,
               "statuses": {status: {"count": len(values), "p50_s": percentile(values, 50),
                                     "p99_s": percentile(values, 99)} for status, values in sorted(latencies.items())}}
        ok, refused = row["statuses"].get("200", {}), row["statuses"].get("429", {})
        if ok.get("p99_s") and refused.get("p99_s"):
            row["p99_429_over_p99_200"] = refused["p99_s"] / ok["p99_s"]
        rows.append(row)
        print(json.dumps(row))
    command = "python benchmarks/overload.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = ["# Overload: refusals against answers at 256 clients", "",
             f"`{command.strip()}`: "
             f"{args.clients} closed-loop clients, one input per request, full default response, a queue of 64 items,",
             "load generator on the same machine. Target: p99(429) <= p99(200) / 10. Clients retry at once after a",
             "429, or (rows so marked) wait the 1 s of its Retry-After, as the openai client's backoff does.", "",
             "| run | 200s | p50 200 (ms) | p99 200 (ms) | 429s | p50 429 (ms) | p99 429 (ms) | p99 429 / p99 200 | errors |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        ok, refused = row["statuses"].get("200", {}), row["statuses"].get("429", {})
        errors = sum(v["count"] for k, v in row["statuses"].items() if k not in ("200", "429"))
        ratio = row.get("p99_429_over_p99_200")
        lines.append(f"| {row['run']} | {ok.get('count', 0)} | {ms(ok.get('p50_s'))} | {ms(ok.get('p99_s'))} | "
                     f"{refused.get('count', 0)} | {ms(refused.get('p50_s'))} | {ms(refused.get('p99_s'))} | "
                     f"{'-' if ratio is None else f'{ratio:.3f}'} | {errors} |")
    lines += ["", f"Machine: {describe(host)}. Bundle: `{args.bundle.name}`. The default service runs 3 inference "
              "workers of one thread each (`inference_workers`, benchmarks/results/inference_workers.md)."]
    write_results("overload", {"machine": host, "command": command, "bundle": str(args.bundle), "rows": rows},
                  "\n".join(lines))


if __name__ == "__main__":
    main()
