"""Several models in one service (issue 21): the memory each one adds, and whether one model's flood
starves another's requests.

    python benchmarks/several_models.py [memory|fairness|all] [--bundle bundles/tweets] [--small bundles/tweets-small]

Memory: the service process's resident memory (VmRSS, and its peak VmHWM, from /proc) once ready
and after 20 requests to each model, serving 1, 2 and 3 bundles: the default MiniLM bundle (its
int8 copy on a CPU); + the same bundle again under a second name (a second session, batcher and
bank: what one more MiniLM model costs); + the small from-scratch bundle.

Fair sharing: a service with model A (the default MiniLM bundle) and model B (the small bundle),
A's queue bounded (--max-queue-items 256). B gets a light load (2 clients, one text per request)
alone, then while A is flooded (64 clients x 16 texts, far past what it serves: it sheds 429s);
all of it for five services: as configured by default, with A's inference threads at nice 10 (--nice),
then under SCHED_IDLE (`--inference-nice A=idle`), each also with A on one ONNX Runtime thread;
then, as a reference, each model in a service of its own (own process, own port). Target: B's p99 under A's flood at most 2x its p99
alone. B's load runs in this process, A's flood in a process of its own (raw HTTP/1.1 keep-alive
clients), on the same cores as the service. Results:
benchmarks/results/several_models_{memory,fairness}.{md,json}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
from pathlib import Path

from common import ROOT, closed_loop, describe, machine, ms, percentile, start_service, stop_service, write_results

TEXTS = ["what a great day", "the service is slow today", "love it", "not at all what I wanted, sadly",
         "good morning everyone", "this is the worst", "I can't wait for the weekend", "meh"]


def rss(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a process, MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(value.split()[0]) / 1024
    return values


def memory(bundle: Path, small: Path) -> list[dict]:
    import httpx

    rows = []
    sets = [("default", [str(bundle)]), ("default + a second MiniLM", [str(bundle), f"second={bundle}"]),
            ("default + second + small", [str(bundle), f"second={bundle}", f"small={small}"])]
    for label, bundles in sets:
        flags = [arg for spec in bundles[1:] for arg in ("--bundle", spec)]
        process, url = start_service(Path(bundles[0]), *flags, log_path=ROOT / "runs" / "several_models.log")
        try:
            ready = rss(process.pid)
            names = [m["id"] for m in httpx.get(f"{url}/v1/models", timeout=10).json()["data"]]
            for name in names:
                for i in range(20):
                    body = {"model": name, "inputs": [TEXTS[i % len(TEXTS)]], "neighbors": 5}
                    httpx.post(f"{url}/v1/atomize", json=body, timeout=60).raise_for_status()
            served = rss(process.pid)
        finally:
            stop_service(process)
        rows.append({"models": len(bundles), "label": label, "names": names, "rss_ready_mib": ready["VmRSS"],
                     "rss_mib": served["VmRSS"], "peak_mib": served["VmHWM"]})
        print(rows[-1])
    return rows


async def load(port: int, model: str, clients: int, size: int, seconds: float,
               pause_on_429_s: float = 0.0) -> dict[str, list[float]]:
    def body(index: int) -> bytes:
        texts = [TEXTS[(index + j) % len(TEXTS)] for j in range(size)]
        return json.dumps({"model": model, "inputs": texts, "include": ["embedding"]}).encode()

    return await closed_loop(port, body, clients, seconds, pause_on_429_s=pause_on_429_s)


def summary(latencies: dict[str, list[float]], seconds: float) -> dict:
    ok = latencies.get("200", [])
    return {"statuses": {status: len(values) for status, values in sorted(latencies.items())},
            "ok_per_s": len(ok) / seconds, "p50_s": percentile(ok, 50), "p99_s": percentile(ok, 99)}


def flood(port: int, model: str, seconds: float, pause_on_429_s: float, out) -> None:
    """A's flood, in its own process (so B's client measures the service, not a loop busy with A)."""
    out.put(asyncio.run(load(port, model, 64, 16, seconds, pause_on_429_s)))


def fairness(bundle: Path, small: Path, seconds: float, nice: int) -> dict:
    """B alone and under A's two floods, for the service as configured by default, with A's
    inference threads at nice `nice` (--inference-nice), and with A also on one ONNX Runtime thread
    (--inference-threads A=1, a core left to the event loop and B), each a fresh service."""
    a = json.loads((bundle / "manifest.json").read_text())["name"]
    result = {"model_a": a, "model_b": "small", "services": {}}
    for label, flags in service_settings(a, nice):
        result["services"][label] = {"flags": flags, **fairness_of(bundle, small, seconds, flags)}
    result["services"][SEPARATE] = {"flags": [], **separate_services(bundle, small, seconds)}
    return result


SEPARATE = "reference: a service per model (two processes, two ports)"


def service_settings(a: str, nice: int) -> list[tuple[str, list[str]]]:
    """(label, flags) of each service the fairness part starts: defaults; A's inference threads at
    nice `nice`, then under SCHED_IDLE; each of those also with A on one ONNX Runtime thread."""
    settings = [("defaults", [])]
    for name, value in ((f"nice {nice}", str(nice)), ("idle", "idle")):
        priority = ["--inference-nice", f"{a}={value}"]
        settings += [(f"A at {name}", priority), (f"A at {name}, 1 inference thread",
                                                   [*priority, "--inference-threads", f"{a}=1"])]
    return settings


A_LIMITS = ("--max-queue-items", "256", "--max-inputs-per-request", "64")  # A's bounded queue; its 16-text bodies


def fairness_of(bundle: Path, small: Path, seconds: float, flags: list[str]) -> dict:
    process, url = start_service(bundle, "--bundle", f"small={small}", *A_LIMITS, *flags,
                                 log_path=ROOT / "runs" / "several_models.log")
    port = int(url.rsplit(":", 1)[1])
    import httpx

    a = httpx.get(f"{url}/v1/models", timeout=10).json()["data"][0]["id"]
    try:
        result = measure_fairness(port, a, port, seconds)
    finally:
        stop_service(process)
    print(flags, result)
    return result


def separate_services(bundle: Path, small: Path, seconds: float) -> dict:
    """The same loads on two services, one process and one port per model: B's requests never share an
    event loop, a process or a batcher with A's. What is left of A's flood is its load on the cores
    (its service and its load generator), so this bounds what any sharing inside one process can reach."""
    import httpx

    log = ROOT / "runs" / "several_models.log"
    a_process, a_url = start_service(bundle, *A_LIMITS, log_path=log)
    try:
        b_process, b_url = start_service(Path(small), log_path=log.with_name("several_models_b.log"))
        try:
            a = httpx.get(f"{a_url}/v1/models", timeout=10).json()["data"][0]["id"]
            b = httpx.get(f"{b_url}/v1/models", timeout=10).json()["data"][0]["id"]
            result = measure_fairness(int(a_url.rsplit(":", 1)[1]), a, int(b_url.rsplit(":", 1)[1]), seconds, b)
        finally:
            stop_service(b_process)
    finally:
        stop_service(a_process)
    print("separate services", result)
    return result


def measure_fairness(a_port: int, a: str, b_port: int, seconds: float, b: str = "small") -> dict:
    """B's light load alone, then under A's two floods (429s retried at once, then after Retry-After)."""
    result = {}
    asyncio.run(load(b_port, b, 2, 1, 3.0))  # warm
    result["b_alone"] = summary(asyncio.run(load(b_port, b, 2, 1, seconds)), seconds)
    for key, pause in (("", 0.0), ("_retry_after", 1.0)):
        out = multiprocessing.Queue()
        flooding = multiprocessing.Process(target=flood, args=(a_port, a, seconds, pause, out))
        load_average = os.getloadavg()[0]
        flooding.start()
        light = asyncio.run(load(b_port, b, 2, 1, seconds))
        result[f"a_flood{key}"] = summary(out.get(timeout=seconds + 120), seconds)
        flooding.join()
        result[f"b_under_a_flood{key}"] = {**summary(light, seconds), "load_average_before": load_average}
        result[f"p99_ratio{key}"] = result[f"b_under_a_flood{key}"]["p99_s"] / result["b_alone"]["p99_s"]
    return result


def memory_report(rows: list[dict], host: dict) -> str:
    lines = ["# Several models in one service: memory", "",
             f"`python benchmarks/several_models.py memory` (make bench-several) on {describe(host)}. Resident set of",
             "the service process (MiB), from /proc: once ready, and after 20 requests to each model (peak: VmHWM).", "",
             "| models | bundles | RSS when ready | RSS after 20 requests each | peak |", "|---:|---|---:|---:|---:|"]
    lines += [f"| {r['models']} | {r['label']} ({', '.join(r['names'])}) | {r['rss_ready_mib']:.0f} | {r['rss_mib']:.0f} | "
              f"{r['peak_mib']:.0f} |" for r in rows]
    return "\n".join(lines)


def fairness_report(fair: dict, host: dict, seconds: float) -> str:
    lines = [
        "# Several models in one service: fair sharing", "",
        f"`python benchmarks/several_models.py fairness` (make bench-several) on {describe(host)}.",
        f"B ({fair['model_b']}: 2 clients x 1 text a request) alone, then while A ({fair['model_a']}: 64 clients x 16",
        f"texts, its queue bounded at 256 items) is flooded: by clients that send again at once after a 429, then by",
        f"clients that wait the 1 s of its Retry-After. {seconds:g} s each; A's flood from a process of its own, B's",
        "from this one, both on the same 2 cores as the service. Each service setting is a fresh service: as",
        "configured by default, then with A's inference threads (its batch thread and ONNX Runtime's) at a higher",
        "nice value (`--inference-nice A=N`), so that the scheduler runs the event loop and B first, then under",
        "SCHED_IDLE (`--inference-nice A=idle`: they run only when nothing else is ready), each of the two also",
        "with A on one ONNX Runtime thread (`--inference-threads A=1`), so that a core is left to the loop and B.",
        "The last service is a reference, not a setting: each model served by a process of its own on its own port",
        "(no routing by `model`), so B shares nothing with A but the cores; it bounds what any sharing inside one",
        "service can reach on this machine.", "",
        "| service | load | B answers/s | B statuses | B p50 ms | B p99 ms | B p99 / alone | A answers/s | A statuses "
        "| load avg before |",
        "|---|---|---:|---|---:|---:|---:|---:|---|---:|",
    ]
    worst = {}
    for label, run in fair["services"].items():
        b = run["b_alone"]
        lines.append(f"| {label} | B alone | {b['ok_per_s']:.0f} | {statuses(b)} | {ms(b['p50_s'])} | {ms(b['p99_s'])} "
                     f"| 1.00 | – | – | – |")
        for key, name in (("", "A flooded, 429s retried at once"), ("_retry_after", "A flooded, 429s retried after 1 s")):
            under, flood = run[f"b_under_a_flood{key}"], run[f"a_flood{key}"]
            lines.append(f"| {label} | B while {name} | {under['ok_per_s']:.0f} | {statuses(under)} | {ms(under['p50_s'])} | "
                         f"{ms(under['p99_s'])} | {run[f'p99_ratio{key}']:.2f} | {flood['ok_per_s']:.0f} | "
                         f"{statuses(flood)} | {under['load_average_before']:.1f} |")
        worst[label] = max(run["p99_ratio"], run["p99_ratio_retry_after"])
    lines.append("")
    lines += [f"- {label}: B's p99 under A's flood / alone, the worse of the two: **{value:.2f}x** (target <= 2x: "
              f"{'met' if value <= 2 else 'not met'})." for label, value in worst.items()]
    return "\n".join(lines)


def statuses(summary: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in summary["statuses"].items())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", nargs="?", choices=("memory", "fairness", "all"), default="all")
    parser.add_argument("--bundle", type=Path, default=ROOT / "bundles" / "tweets")
    parser.add_argument("--small", type=Path, default=ROOT / "bundles" / "tweets-small")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--nice", type=int, default=10, help="A's inference_nice in the second service")
    args = parser.parse_args(argv)
    host = machine()
    if args.part in ("memory", "all"):
        rows = memory(args.bundle, args.small)
        write_results("several_models_memory", {"machine": host, "memory": rows}, memory_report(rows, host))
    if args.part in ("fairness", "all"):
        fair = fairness(args.bundle, args.small, args.seconds, args.nice)
        write_results("several_models_fairness", {"machine": host, "seconds": args.seconds, "fairness": fair},
                      fairness_report(fair, host, args.seconds))


if __name__ == "__main__":
    main()
