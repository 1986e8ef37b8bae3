"""The fixed cost of a request (issue 19, item 4): the CPU time the service spends on a request
beyond its model, before and after a change of the request path.

    python benchmarks/request_cost.py [--bundle bundles/tweets-small] [--before COMMIT]
                                      [--rounds 4] [--seconds 8] [--clients 32]

Two services run at once on 127.0.0.1 on the same bundle: the code of `--before` (a `git
archive` of it) and this checkout. Each round loads each service in turn (the order rotates) with
`--clients` closed-loop clients x 1 tweet on /v1/embeddings for `--seconds` (loadgen.py, its own
process). Per point:
- items/s and p99, as the load process saw them;
- CPU per request: the service process's CPU time (user + system, every thread, /proc/PID/stat)
  over the point, divided by the /v1 requests it answered meanwhile (its atom_requests_total);
- the model's CPU per item: ONNX Runtime alone, in this process, on the batches the service's
  policy cuts from rounds of the size the service saw, with the same session settings;
- HTTP + Python per request: CPU per request less the model's CPU for its one item;
- served/raw: items/s against ONNX Runtime alone on those batches (wall clock, quiet: the
  services are stopped by then).
CPU times hold up on a loaded machine far better than rates; the load average is recorded beside
each point. Results: benchmarks/results/request_cost.{md,json}.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, code_at, describe, machine, start_service, stop_service, write_results  # noqa: E402
from loadgen import mean_between, run_load, scrape  # noqa: E402

log = logging.getLogger("bench.request_cost")
BEFORE_COMMIT = "a4555d3"  # main just before the request-path changes (059e5df)
PATH = "/v1/embeddings"


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def answered(url: str, path: str = PATH) -> float:
    """The service's atom_requests_total for `path`, every status and model."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "atom_requests_total" and sample.labels.get("route") == path)


def point(process, url: str, bodies: Path, clients: int, seconds: float) -> dict:
    """One load point on one service: the load process's figures and the service's CPU per request."""
    counters, requests, cpu = scrape(url), answered(url), process_cpu_s(process.pid)
    load = os.getloadavg()[0]
    row = run_load(url, PATH, bodies, clients, 1, seconds)
    cpu = process_cpu_s(process.pid) - cpu
    requests = answered(url) - requests
    after = scrape(url)
    row.update(cpu_s=cpu, requests_counted=requests, cpu_us_per_request=cpu / requests * 1e6,
               mean_round_items=mean_between(after, counters, "atom_round_items"),
               mean_batch_items=mean_between(after, counters, "atom_batch_items"), load_average_before=load)
    return row


def model_cpu(runtime, items: list, round_items: int, batching: dict, seconds: float, workers: int = 1) -> dict:
    """ONNX Runtime alone on the batches the service's policy makes from rounds of `round_items`,
    `workers` at once: CPU microseconds per item (this process: every ONNX Runtime thread) and items/s."""
    from batch_padding import items_per_s, policy_batches

    padding = float("inf") if batching["max_batch_padding"] is None else batching["max_batch_padding"]
    feeds = policy_batches(runtime, items, round_items, padding, batching["max_batch_items"], batching["max_batch_components"])
    usage = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    rate = items_per_s(runtime, feeds, seconds, workers)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    return {"items_per_s": rate, "cpu_us_per_item": cpu / (rate * wall) * 1e6}


def summarise(runs: dict[str, list[dict]], raw: dict[str, dict]) -> list[dict]:
    """Per system: the median of its rounds, HTTP + Python per request and served/raw."""
    rows = []
    for name, points in runs.items():
        cpu = statistics.median(p["cpu_us_per_request"] for p in points)
        rate = statistics.median(p["items_per_s"] for p in points)
        rows.append({"system": name, "items_per_s": rate, "p99_ms": statistics.median(p["p99_ms"] for p in points),
                     "cpu_us_per_request": cpu, "model_cpu_us_per_item": raw[name]["cpu_us_per_item"],
                     "http_python_us_per_request": cpu - raw[name]["cpu_us_per_item"],
                     "raw_items_per_s": raw[name]["items_per_s"], "served_over_raw": rate / raw[name]["items_per_s"],
                     "rounds": [round(p["items_per_s"]) for p in points],
                     "cpu_rounds": [round(p["cpu_us_per_request"]) for p in points],
                     "loads": [round(p["load_average_before"], 2) for p in points]})
    return rows


def report(rows: list[dict], results: dict) -> str:
    a = results["args"]
    lines = [
        "# The fixed cost of a request", "",
        f"`python benchmarks/request_cost.py --bundle {a['bundle']} --before {a['before']} --rounds {a['rounds']} "
        f"--seconds {a['seconds']:g} --clients {a['clients']}{''.join(f' --flag={f}' for f in a['flags'])}"
        f"{''.join(f' --variant={v!r}' for v in a['variants'])}` on {describe(results['machine'])}. "
        f"Bundle `{results['bundle']}` ({results['precision']}). The services run at once: the code of {a['before']} "
        f"(before), this checkout (after) and its variants; each round loads each in turn, {a['clients']} clients x 1 tweet on "
        f"{PATH} for {a['seconds']:g} s. CPU per request: the service process's CPU time over the requests it "
        "answered; the model's share: ONNX Runtime alone on the batches the service ran; the rest is HTTP + Python. "
        "Medians of the rounds.", "",
        "| code | items/s | p99 ms | CPU µs / request | model CPU µs / item | HTTP + Python µs / request | raw items/s "
        "| served/raw | items/s by round | CPU µs by round | load avg before each |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['system']} | {r['items_per_s']:.0f} | {r['p99_ms']:.0f} | {r['cpu_us_per_request']:.0f} | "
                     f"{r['model_cpu_us_per_item']:.0f} | {r['http_python_us_per_request']:.0f} | {r['raw_items_per_s']:.0f} | "
                     f"{r['served_over_raw']:.2f} | {', '.join(map(str, r['rounds']))} | "
                     f"{', '.join(map(str, r['cpu_rounds']))} | {', '.join(map(str, r['loads']))} |")
    if len(rows) >= 2:
        before, after = rows[:2]
        lines += ["", f"- HTTP + Python per request: {before['http_python_us_per_request']:.0f} µs before, "
                      f"{after['http_python_us_per_request']:.0f} µs after "
                      f"({after['http_python_us_per_request'] / before['http_python_us_per_request']:.2f}x).",
                  f"- items/s: {after['items_per_s'] / before['items_per_s']:.2f}x before; served/raw after "
                  f"{after['served_over_raw']:.2f} (target >= 0.5 for the small bundle at 32 clients: "
                  f"{'met' if after['served_over_raw'] >= 0.5 else 'not met'})."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "bundles" / "tweets-small")
    parser.add_argument("--before", default=BEFORE_COMMIT)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--flag", action="append", default=[],
                        help="a command-line flag for this checkout's service (repeat; e.g. --flag=--prepare-on-loop-bytes=2048)")
    parser.add_argument("--variant", action="append", default=[], metavar="FLAGS",
                        help="one more service of this checkout, with these flags (space-separated; repeat)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("ATOM_OTLP_ENDPOINT", "ATOM_OTLP_SAMPLE_RATIO"):  # both sides untraced
        os.environ.pop(name, None)

    from contract.bundle import load_bundle
    from peers import test_texts
    from serve import in_flight, raw_runtime

    texts = test_texts(1024)
    work = Path(tempfile.mkdtemp(prefix="request-cost-"))
    bodies = work / "bodies.jsonl"
    bodies.write_text("".join(httpx.Request("POST", "/", json={"input": [t]}).content.decode() + "\n" for t in texts))
    systems = {f"before ({args.before})": (code_at(args.before, work / "before"), []),
               "after (this checkout" + "".join(f" {f}" for f in args.flag) + ")": (ROOT, args.flag)}
    systems |= {f"this checkout {flags}": (ROOT, flags.split()) for flags in args.variant}
    started = {name: start_service(args.bundle, *flags, code=code, log_path=work / f"{i}.log")
               for i, (name, (code, flags)) in enumerate(systems.items())}
    runs: dict[str, list[dict]] = {name: [] for name in systems}
    try:
        infos = {name: httpx.get(f"{url}/v1/model", timeout=10).json() for name, (_, url) in started.items()}
        info = next(iter(infos.values()))
        for name, (process, url) in started.items():  # warm-up, not counted
            run_load(url, PATH, bodies, args.clients, 1, 2.0)
        for r in range(args.rounds):
            order = list(started)[r % len(started):] + list(started)[: r % len(started)]
            for name in order:
                process, url = started[name]
                runs[name].append(point(process, url, bodies, args.clients, args.seconds))
                p = runs[name][-1]
                log.info("round %d %s: %.0f items/s, %.0f CPU µs/request", r, name, p["items_per_s"], p["cpu_us_per_request"])
    finally:
        for process, _ in started.values():
            stop_service(process)
    bundle = load_bundle(args.bundle)
    runtimes: dict = {}  # one per thread count: each system's raw runs as its workers do (code from before: 1)
    raw, items = {}, None
    for name, points in runs.items():
        served = infos[name]["runtime"]
        threads = served.get("threads_per_worker", 0)
        if threads not in runtimes:
            runtimes[threads] = raw_runtime(bundle, infos[name], device="cpu", precision=info["runtime"]["precision"])
        items = items or runtimes[threads].prepare(texts)  # tokenized once: the same for every session
        raw[name] = model_cpu(runtimes[threads], items, max(1, round(statistics.median(p["mean_round_items"] or 1 for p in points))),
                              infos[name]["batching"], min(8.0, args.seconds),
                              in_flight(served.get("workers", 1), args.clients, 1))
    rows = summarise(runs, raw)
    results = {"machine": machine("CPUExecutionProvider"), "bundle": info["name"], "precision": info["runtime"]["precision"],
               "args": {"bundle": str(args.bundle.relative_to(ROOT) if args.bundle.is_relative_to(ROOT) else args.bundle),
                        "before": args.before, "rounds": args.rounds, "seconds": args.seconds, "clients": args.clients,
                        "flags": args.flag, "variants": args.variant},
               "rows": rows, "points": runs, "raw": raw}
    write_results("request_cost", results, report(rows, results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
