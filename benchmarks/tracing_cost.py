"""What tracing costs (issue 21): the service with tracing off against the same service before
tracing was written, and with tracing on, side by side in one run.

    python benchmarks/tracing_cost.py [--bundle bundles/tweets-small] [--bundle bundles/tweets] [--rounds 6] [--seconds 10]

Four services of each bundle run at once on 127.0.0.1: the code of the commit before tracing
(`--before`, its parent: a `git archive` of it), this checkout with tracing off (the default: no
ATOM_OTLP_ENDPOINT), and this checkout sending every request's trace (then 1 request in 10:
ATOM_OTLP_SAMPLE_RATIO=0.1) over OTLP/HTTP to a receiver in its own process that decodes the
protobuf and counts the spans. Each round loads each service in
turn (the order rotates from round to round) with 32 keep-alive clients, one tweet a request on
/v1/atomize, for `--seconds`; items/s is the 200s per second. The figure per system is the median of
its rounds; the target: tracing off >= 0.98x before (costs < 2% items/s). The spans the receiver
decodes per answered request say whether a traced request's spans all arrive (6 each: the request,
parse, queue, batch, inference, neighbor_search; about 0.6 at a ratio of 0.1). The small bundle first:
its model is fast, so the request path, where tracing lives, weighs most there. Results:
benchmarks/results/tracing_cost.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import tempfile
import time
from pathlib import Path

from common import ROOT, closed_loop, code_at, describe, machine, start_service, stop_service, write_results

BEFORE_COMMIT = "552738f"  # main just before the tracing commit (3790578)
CLIENTS = 32
EXPORT_WAIT_S = 3.0  # the service's span export delay is 1 s


def receive(port_out, counts) -> None:
    """An OTLP/HTTP trace receiver (runs in its own process): counts the spans it decodes."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            request = ExportTraceServiceRequest.FromString(self.rfile.read(int(self.headers["Content-Length"])))
            with counts.get_lock():
                counts.value += sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
            reply = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port_out.put(server.server_address[1])
    server.serve_forever()


def items_per_s(port: int, texts: list[str], seconds: float) -> tuple[float, int]:
    bodies = [json.dumps({"inputs": [text]}).encode() for text in texts]
    latencies = asyncio.run(closed_loop(port, lambda i: bodies[i % len(bodies)], CLIENTS, seconds))
    errors = sum(len(v) for k, v in latencies.items() if k != "200")
    return len(latencies.get("200", [])) / seconds, errors


def measure(bundle: Path, before: Path, endpoint: str, spans, rounds: int, seconds: float, texts: list[str],
            work: Path) -> dict:
    systems = [("before tracing", before, {}), ("tracing off", ROOT, {}),
               ("tracing on", ROOT, {"ATOM_OTLP_ENDPOINT": endpoint}),
               ("tracing on, 1 request in 10", ROOT, {"ATOM_OTLP_ENDPOINT": endpoint, "ATOM_OTLP_SAMPLE_RATIO": "0.1"})]
    started = []
    try:
        for name, code, env in systems:
            process, url = start_service(bundle, code=code, env=env, log_path=work / f"{bundle.name}-{len(started)}.log")
            started.append((name, process, int(url.rsplit(":", 1)[1])))
        for _, _, port in started:
            items_per_s(port, texts, 3.0)  # warm
        runs: dict[str, list[dict]] = {name: [] for name, _, _ in started}
        for r in range(rounds):
            order = started[r % len(started):] + started[:r % len(started)]
            for name, _, port in order:
                load = os.getloadavg()[0]
                spans_before = spans.value
                rate, errors = items_per_s(port, texts, seconds)
                time.sleep(EXPORT_WAIT_S)  # the last spans of a traced run arrive within its export delay
                runs[name].append({"round": r, "items_per_s": rate, "errors": errors, "load_average_before": load,
                                   "spans_received": spans.value - spans_before,
                                   "spans_per_answer": (spans.value - spans_before) / max(1.0, rate * seconds)})
                print(bundle.name, name, runs[name][-1], flush=True)
    finally:
        for _, process, _ in started:
            stop_service(process)
    medians = {name: statistics.median(run["items_per_s"] for run in values) for name, values in runs.items()}
    return {"bundle": bundle.name, "runs": runs, "median_items_per_s": medians,
            "off_vs_before": medians["tracing off"] / medians["before tracing"],
            "on_vs_before": medians["tracing on"] / medians["before tracing"],
            "sampled_vs_before": medians["tracing on, 1 request in 10"] / medians["before tracing"]}


def report(rows: list[dict], host: dict, args) -> str:
    lines = ["# What tracing costs", "",
             f"`python benchmarks/tracing_cost.py` on {describe(host)}. Four services of each bundle at once: the "
             f"code before tracing ({args.before}), this code with tracing off, with tracing on (OTLP/HTTP to a "
             f"receiver in its own process) and on for 1 request in 10 (ATOM_OTLP_SAMPLE_RATIO=0.1). {args.rounds} rounds, each loading every service in turn (rotating order) "
             f"with {CLIENTS} clients x 1 tweet on /v1/atomize for {args.seconds:g} s; the median round per system. "
             "The load generator and the receiver run on the same cores as the services.", "",
             "| bundle | system | items/s (median) | rounds | x before | load avg before each round | spans received per answer |",
             "|---|---|---:|---|---:|---|---:|"]
    for row in rows:
        base = row["median_items_per_s"]["before tracing"]
        for name, runs in row["runs"].items():
            rates = ", ".join(f"{run['items_per_s']:.0f}" for run in runs)
            loads = ", ".join(f"{run['load_average_before']:.1f}" for run in runs)
            spans = sum(run["spans_received"] for run in runs) / max(1.0, sum(run["items_per_s"] * args.seconds
                                                                             for run in runs))
            median = row["median_items_per_s"][name]
            lines.append(f"| {row['bundle']} | {name} | {median:.0f} | {rates} | {median / base:.3f} | {loads} | {spans:.2f} |")
    lines.append("")
    for row in rows:
        met = "met" if row["off_vs_before"] >= 0.98 else "not met"
        lines.append(f"- {row['bundle']}: tracing off {row['off_vs_before']:.3f}x before (target >= 0.98: {met}); "
                     f"tracing on {row['on_vs_before']:.3f}x; on for 1 request in 10 {row['sampled_vs_before']:.3f}x.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, action="append")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--before", default=BEFORE_COMMIT)
    args = parser.parse_args(argv)
    bundles = args.bundle or [ROOT / "bundles" / "tweets-small", ROOT / "bundles" / "tweets"]
    for name in ("ATOM_OTLP_ENDPOINT", "ATOM_OTLP_SAMPLE_RATIO"):  # "tracing off" must be off whatever the shell says
        os.environ.pop(name, None)

    from peers import test_texts

    texts = test_texts(256)
    work = Path(tempfile.mkdtemp(prefix="tracing-cost-"))
    before = code_at(args.before, work / "before")

    spans = multiprocessing.Value("q", 0)
    ports = multiprocessing.Queue()
    receiver = multiprocessing.Process(target=receive, args=(ports, spans), daemon=True)
    receiver.start()
    endpoint = f"http://127.0.0.1:{ports.get(timeout=30)}/v1/traces"
    try:
        rows = [measure(bundle, before, endpoint, spans, args.rounds, args.seconds, texts, work) for bundle in bundles]
    finally:
        receiver.terminate()
    write_results("tracing_cost", {"machine": machine(), "clients": CLIENTS, "seconds": args.seconds,
                                   "rounds": args.rounds, "before": args.before, "rows": rows}, report(rows, machine(), args))


if __name__ == "__main__":
    main()
