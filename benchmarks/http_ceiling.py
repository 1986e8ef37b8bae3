"""The ceiling that HTTP puts on served/raw (issue 19): the machine's CPU per request of a bare
Python HTTP server, against the service's and the model's, on the same load.

    python benchmarks/http_ceiling.py [--bundles bundles/tweets-small,bundles/tweets]
                                      [--clients 8,32,128] [--seconds 8] [--rounds 3]

For each bundle, side by side and in rounds (the order alternates), from the same load process
(loadgen.py: closed loop, keep-alive, 1 test tweet per request on /v1/embeddings):
- `service`: `python -m service` with its defaults but `--precision fp32`, the precision the
  peer table compares;
- `bare`: uvicorn with httptools and uvloop (as the service runs) and an ASGI app of a few lines
  that reads each body and answers the service's own answer to one tweet (peer_apps/bare_http.py):
  HTTP and the load process alone;
- `raw`: the model alone in this process on the batches the service cut at that load, as many
  at once as its workers ran (serve.raw_for), in the same round, while both servers are idle.

The machine's busy CPU (/proc/stat: every process, the load process included) is read over a
window inside each point's measured seconds and divided by the items answered then: CPU ms per
item. A served item costs at least what the bare server spends on a request plus what the model
spends on an item, so on these cores no server built on this HTTP layer passes
`bound = cores / (CPU per bare request + CPU per raw item)` items/s, and served/raw <= bound/raw.
What the service spends beyond the two is its own Python (parsing, tokenizing, batching,
hand-offs, the response). Results: benchmarks/results/http_ceiling.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, describe, free_port, machine, start_server, start_service, stop_service, write_results  # noqa: E402
from loadgen import mean_between, run_load, scrape  # noqa: E402

log = logging.getLogger("bench.http_ceiling")
PATH = "/v1/embeddings"
STARTUP_S = 1.0  # the load process's own start (imports) before its warm-up begins


def busy_cpu_s() -> tuple[float, float]:
    """(busy, all) CPU seconds of the whole machine since boot, every core (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:8]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / ticks, sum(fields) / ticks


def loaded_point(url: str, bodies: Path, clients: int, seconds: float, metrics: bool = True) -> dict:
    """One load point; the machine's busy CPU over the middle of its measured seconds; with
    `metrics`, the service's mean round and batch meanwhile (from its /metrics)."""
    warmup = min(2.0, seconds / 5)
    window: dict[str, tuple[float, float, float]] = {}

    def sample() -> None:  # inside the measured seconds, clear of the load process's start and end
        time.sleep(STARTUP_S + warmup + 0.5)
        window["start"] = (time.perf_counter(), *busy_cpu_s())
        time.sleep(max(1.0, seconds - 1.5))
        window["end"] = (time.perf_counter(), *busy_cpu_s())

    sampler = threading.Thread(target=sample)
    before = scrape(url) if metrics else None
    sampler.start()
    row = run_load(url, PATH, bodies, clients, 1, seconds)
    sampler.join()
    (t0, busy0, all0), (t1, busy1, all1) = window["start"], window["end"]
    cores = os.cpu_count() or 1
    row["busy_cores"] = (busy1 - busy0) / (t1 - t0)
    row["idle_share"] = 1 - (busy1 - busy0) / max(1e-9, all1 - all0)
    row["cpu_ms_per_item"] = 1000 * row["busy_cores"] / row["items_per_s"] if row["items_per_s"] else None
    row["cores"] = cores
    row["load_average_1m"] = os.getloadavg()[0]
    if before is not None:
        after = scrape(url)
        row["mean_round_items"] = mean_between(after, before, "atom_round_items")
        row["mean_batch_items"] = mean_between(after, before, "atom_batch_items")
    return row


def start_bare(answer: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    """peer_apps/bare_http.py under uvicorn (httptools, uvloop) at a free port, answering `answer`'s bytes."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "bare_http:app", "--app-dir", str(ROOT / "benchmarks" / "peer_apps"),
               "--http", "httptools", "--loop", "uvloop", "--no-access-log", "--log-level", "warning",
               "--host", "127.0.0.1", "--port", str(port)]
    return start_server(command, port, env={"BARE_HTTP_RESPONSE": str(answer)}, log_path=log_path, timeout_s=30)


def raw_point(runtime, items: list, row: dict, batching: dict, seconds: float, workers: int) -> dict:
    """The model alone on the batches the service cut for this row: items/s and this process's CPU ms per item."""
    from serve import raw_for

    usage = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    items_per_s = raw_for(runtime, items, row, batching, seconds, {}, workers)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    return {"items_per_s": items_per_s, "cpu_ms_per_item": 1000 * cpu / (items_per_s * wall), "workers": workers}


def ceiling(cores: int, bare_ms: float, raw_ms: float) -> float:
    """Items/s that no server on this HTTP layer passes: the cores over the machine's CPU for one
    bare request plus one item of the model alone (ms each)."""
    return cores / ((bare_ms + raw_ms) / 1000.0)


def measure_bundle(bundle_dir: Path, texts: list[str], clients: list[int], seconds: float, rounds: int,
                   work: Path) -> list[dict]:
    from contract.bundle import load_bundle
    from serve import in_flight, raw_runtime

    bodies = work / "bodies.jsonl"
    bodies.write_text("".join(json.dumps({"input": [t]}) + "\n" for t in texts))
    points: dict[tuple[str, int], list[dict]] = {}
    service, url = start_service(bundle_dir, "--precision", "fp32", log_path=work / f"{bundle_dir.name}.log")
    try:
        info = httpx.get(f"{url}/v1/model", timeout=10).json()
        runtime = raw_runtime(load_bundle(bundle_dir), info, device="cpu", precision="fp32")
        items = runtime.prepare(texts)
        answer = work / f"{bundle_dir.name}.answer.json"
        answer.write_bytes(httpx.post(url + PATH, json={"input": [texts[0]]}, timeout=30).content)
        bare, bare_url = start_bare(answer, work / f"{bundle_dir.name}.bare.log")
        try:
            systems = {"service": url, "bare": bare_url}
            for target in systems.values():  # warm-up, not counted
                run_load(target, PATH, bodies, max(clients), 1, 2.0)
            for r in range(rounds):
                for c in clients:
                    for name in (list(systems) if r % 2 == 0 else list(systems)[::-1]):
                        row = loaded_point(systems[name], bodies, c, seconds, metrics=name == "service")
                        points.setdefault((name, c), []).append(row)
                        log.info("%s round %d %s %d clients: %.0f items/s, %.2f CPU ms/item, idle %.3f", bundle_dir.name,
                                 r, name, c, row["items_per_s"], row["cpu_ms_per_item"] or 0, row["idle_share"])
                    # the model alone, in the same round, on the batches the service just cut (both servers idle)
                    raw = raw_point(runtime, items, points[("service", c)][-1], info["batching"], min(8.0, seconds),
                                    in_flight(info["runtime"].get("workers", 1), c, 1))
                    points.setdefault(("raw", c), []).append(raw)
                    log.info("%s round %d raw %d clients: %.0f items/s, %.2f CPU ms/item", bundle_dir.name, r, c,
                             raw["items_per_s"], raw["cpu_ms_per_item"])
        finally:
            stop_service(bare)
    finally:
        stop_service(service)
    rows = []
    for c in clients:
        served, bare_rows, raw_rows = points[("service", c)], points[("bare", c)], points[("raw", c)]
        median = {"service": {k: statistics.median(p[k] for p in served) for k in
                              ("items_per_s", "p99_ms", "cpu_ms_per_item", "idle_share", "mean_round_items")},
                  "bare": {k: statistics.median(p[k] for p in bare_rows) for k in
                           ("items_per_s", "p99_ms", "cpu_ms_per_item", "idle_share")},
                  "raw": {k: statistics.median(p[k] for p in raw_rows) for k in ("items_per_s", "cpu_ms_per_item")}}
        raw = {**median["raw"], "workers": raw_rows[0]["workers"]}
        bound = ceiling(served[0]["cores"], median["bare"]["cpu_ms_per_item"], raw["cpu_ms_per_item"])
        rows.append({
            "bundle": info["name"], "bundle_dir": str(bundle_dir.relative_to(ROOT) if bundle_dir.is_relative_to(ROOT) else bundle_dir),
            "clients": c, "workers": info["runtime"].get("workers"), "threads_per_worker": info["runtime"].get("threads_per_worker"),
            "service": median["service"], "bare": median["bare"], "raw": raw, "bound_items_per_s": bound,
            "service_over_raw": median["service"]["items_per_s"] / raw["items_per_s"],
            "bound_over_raw": bound / raw["items_per_s"],
            "service_extra_cpu_ms_per_item": median["service"]["cpu_ms_per_item"] - median["bare"]["cpu_ms_per_item"]
            - raw["cpu_ms_per_item"],
            "rounds": {"service": [p["items_per_s"] for p in served], "bare": [p["items_per_s"] for p in bare_rows],
                       "raw": [p["items_per_s"] for p in raw_rows],
                       "load_average": [p["load_average_1m"] for p in served + bare_rows]},
        })
    return rows


def report(rows: list[dict], results: dict) -> str:
    lines = ["# The ceiling that HTTP puts on served/raw", "",
             f"`{results['command']}` on {describe(results['machine'])}. Each bundle fp32, 1 test tweet per request on "
             f"{PATH}, closed loop; medians of {results['args']['rounds']} alternating rounds of "
             f"{results['args']['seconds']:g} s. CPU: the whole machine's busy CPU (the load process included) over "
             "the middle of each point, per item answered. `bare`: uvicorn (httptools, uvloop) answering fixed bytes "
             "(peer_apps/bare_http.py); `raw`: the model alone in process on the service's batches of that round. "
             "`bound` = cores / (bare CPU per request + raw CPU per item): no server on this HTTP layer passes it "
             "on these cores.", "",
             "| bundle | clients | service items/s | p99 ms | bare req/s | raw items/s | bound items/s | "
             "service / raw | bound / raw | CPU ms/item: service | bare | raw | service's own |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        s, b, r = row["service"], row["bare"], row["raw"]
        lines.append(f"| {row['bundle_dir']} | {row['clients']} | {s['items_per_s']:.0f} | {s['p99_ms']:.0f} | "
                     f"{b['items_per_s']:.0f} | {r['items_per_s']:.0f} | {row['bound_items_per_s']:.0f} | "
                     f"{row['service_over_raw']:.2f} | {row['bound_over_raw']:.2f} | {s['cpu_ms_per_item']:.3f} | "
                     f"{b['cpu_ms_per_item']:.3f} | {r['cpu_ms_per_item']:.3f} | {row['service_extra_cpu_ms_per_item']:.3f} |")
    lines += ["", "Machine idle share during the points (median): " + ", ".join(
        f"{row['bundle_dir']} {row['clients']}: service {row['service']['idle_share']:.3f}, bare {row['bare']['idle_share']:.3f}"
        for row in rows) + ".", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundles", default="bundles/tweets-small,bundles/tweets")
    parser.add_argument("--clients", default="8,32,128")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("ATOM_OTLP_ENDPOINT", "ATOM_OTLP_SAMPLE_RATIO"):
        os.environ.pop(name, None)
    from peers import test_texts

    texts = test_texts(1024)
    clients = [int(c) for c in args.clients.split(",")]
    results = {"command": "python benchmarks/http_ceiling.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "machine": machine("CPUExecutionProvider"),
               "args": {"bundles": args.bundles, "clients": clients, "seconds": args.seconds, "rounds": args.rounds}}
    results["command"] = results["command"].strip()
    rows = []
    with tempfile.TemporaryDirectory(prefix="http-ceiling-") as tmp:
        for bundle in args.bundles.split(","):
            bundle_dir = Path(bundle) if Path(bundle).is_absolute() else ROOT / bundle
            rows += measure_bundle(bundle_dir, texts, clients, args.seconds, args.rounds, Path(tmp))
    results["rows"] = rows
    results["load_average_1m_at_end"] = os.getloadavg()[0]
    write_results("http_ceiling", results, report(rows, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
