"""One service process against two on the same cores (issue 19): is one process the limit?

    python benchmarks/two_processes.py [--bundle bundles/tweets-small] [--clients 32] [--seconds 8] [--rounds 3]

With the small bundle a third of the machine stays idle while 32 clients wait
(benchmarks/results/http_ceiling.md). If one process's event loop and interpreter lock are what
holds it back, two processes of the same service, each sent half the clients, use the idle CPU.
Three services start (fp32, default settings otherwise); each round loads one of them with
`--clients` closed-loop clients x 1 test tweet on /v1/embeddings, and the other two at once with
half as many each (two load processes), in alternating order; items/s summed, the machine's idle
share over the point (/proc/stat), medians of the rounds. Results:
benchmarks/results/two_processes.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, describe, machine, start_service, stop_service, write_results  # noqa: E402
from http_ceiling import busy_cpu_s  # noqa: E402
from loadgen import run_load  # noqa: E402

PATH = "/v1/embeddings"


def loaded_together(urls: list[str], bodies: Path, clients: int, seconds: float) -> dict:
    """`clients` split evenly over the services, each share from a load process of its own, at once."""
    out: list[dict] = [{} for _ in urls]

    def one(i: int) -> None:
        out[i] = run_load(urls[i], PATH, bodies, clients // len(urls), 1, seconds)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(urls))]
    busy0, all0 = busy_cpu_s()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    busy1, all1 = busy_cpu_s()
    return {"items_per_s": sum(o["items_per_s"] for o in out), "p99_ms": max(o["p99_ms"] or 0 for o in out),
            "idle_share": 1 - (busy1 - busy0) / max(1e-9, all1 - all0), "load_average_1m": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "bundles" / "tweets-small")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    from peers import test_texts

    host = machine("CPUExecutionProvider")
    with tempfile.TemporaryDirectory(prefix="two-processes-") as tmp:
        bodies = Path(tmp) / "bodies.jsonl"
        bodies.write_text("".join(json.dumps({"input": [t]}) + "\n" for t in test_texts(1024)))
        services = [start_service(args.bundle, "--precision", "fp32", log_path=Path(tmp) / f"{i}.log") for i in range(3)]
        try:
            setups = {"one process": [services[0][1]], "two processes": [services[1][1], services[2][1]]}
            for url in (u for urls in setups.values() for u in urls):  # warm-up, not counted
                run_load(url, PATH, bodies, 8, 1, 2.0)
            points: dict[str, list[dict]] = {name: [] for name in setups}
            for r in range(args.rounds):
                for name in (list(setups) if r % 2 == 0 else list(setups)[::-1]):
                    points[name].append(loaded_together(setups[name], bodies, args.clients, args.seconds))
                    print(f"round {r} {name}: {points[name][-1]['items_per_s']:.0f} items/s, idle "
                          f"{points[name][-1]['idle_share']:.3f}", file=sys.stderr, flush=True)
        finally:
            for process, _ in services:
                stop_service(process)
    median = {name: {k: statistics.median(p[k] for p in rows) for k in ("items_per_s", "p99_ms", "idle_share")}
              for name, rows in points.items()}
    ratio = median["two processes"]["items_per_s"] / median["one process"]["items_per_s"]
    results = {"command": ("python benchmarks/two_processes.py " + " ".join(argv if argv is not None else sys.argv[1:])).strip(),
               "machine": host, "bundle": str(args.bundle.relative_to(ROOT) if args.bundle.is_relative_to(ROOT) else args.bundle),
               "clients": args.clients, "seconds": args.seconds, "rounds": points, "median": median,
               "two_over_one": ratio}
    lines = ["# One service process against two on the same cores", "",
             f"`{results['command']}` on {describe(host)}. `{results['bundle']}` in fp32, {args.clients} closed-loop "
             f"clients x 1 test tweet on {PATH} in all: to one service, or half to each of two; medians of "
             f"{args.rounds} alternating rounds of {args.seconds:g} s.", "",
             "| setup | items/s | p99 ms | machine idle | items/s by round |", "|---|---:|---:|---:|---|"]
    for name, m in median.items():
        lines.append(f"| {name} | {m['items_per_s']:.0f} | {m['p99_ms']:.0f} | {m['idle_share']:.1%} | "
                     + ", ".join(f"{p['items_per_s']:.0f}" for p in points[name]) + " |")
    lines += ["", f"Two processes / one: {ratio:.2f}x.", ""]
    write_results("two_processes", results, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
