"""A closed-loop HTTP load generator, run as its own process: `python benchmarks/loadgen.py JOB_JSON`.

`concurrency` keep-alive connections each send their next request as soon as the last one is
answered, cycling through the request bodies of a file (one JSON body per line), until
`duration_s` (after `warmup_s`, whose answers are not counted) or `max_requests` is reached:
it always stops by itself. It prints one JSON object: requests, statuses, errors, items/s, p50,
p90, p99 and max latency of the answered requests.

Minimal on purpose (raw asyncio streams, no HTTP library): on a small machine the load process
shares the cores with the server under test, so every microsecond spent here is one the server
loses, and the same client is used for every system compared.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import numpy as np


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """One HTTP/1.1 keep-alive request; returns the status after reading the whole body."""
    writer.write(request)
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("the server closed the connection")
    status = int(status_line.split()[1])
    length, chunked = 0, False
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if not chunked:
        await reader.readexactly(length)
        return status
    while True:  # chunked: size line, data, CRLF ... until a zero-size chunk and the trailers
        size = int((await reader.readline()).split(b";")[0], 16)
        if size == 0:
            while (await reader.readline()) not in (b"\r\n", b""):
                pass
            return status
        await reader.readexactly(size + 2)


def requests_for(url: str, path: str, bodies: list[str], headers: dict[str, str]) -> list[bytes]:
    host = url.removeprefix("http://").rstrip("/")
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return [
        (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{extra}"
         f"Content-Length: {len(body.encode())}\r\n\r\n").encode() + body.encode()
        for body in bodies
    ]


async def generate_load(job: dict) -> dict:
    host, port = job["url"].removeprefix("http://").rstrip("/").split(":")
    bodies = Path(job["bodies"]).read_text().splitlines()
    requests = requests_for(job["url"], job.get("path", "/v1/atomize"), bodies, job.get("headers", {}))
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors: dict[str, int] = {}
    counter = 0
    loop = asyncio.get_running_loop()
    start = loop.time()
    measure_from = start + job.get("warmup_s", 1.0)
    end = measure_from + job["duration_s"]
    # Each connection starts at its own place in the bodies, so clients do not send in lockstep.
    offset = max(1, len(requests) // max(1, job["concurrency"]))

    async def connection(number: int) -> None:
        nonlocal counter
        reader = writer = None
        while loop.time() < end and counter < job["max_requests"]:
            request = requests[(number * offset + counter) % len(requests)]
            counter += 1
            sent = loop.time()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, int(port))
                status = await exchange(reader, writer, request)
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
                if sent >= measure_from:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                if writer is not None:
                    writer.close()
                reader = writer = None
                await asyncio.sleep(0.01)
                continue
            if sent >= measure_from:
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                if status == 200:
                    latencies.append(loop.time() - sent)
        if writer is not None:
            writer.close()

    await asyncio.gather(*(connection(i) for i in range(job["concurrency"])))
    seconds = min(loop.time(), end) - measure_from
    ms = np.asarray(latencies) * 1000.0
    ok = len(latencies)
    failed = sum(n for s, n in statuses.items() if s != "200") + sum(errors.values())

    def percentile(q: float) -> float | None:
        return float(np.percentile(ms, q)) if ok else None

    return {
        "concurrency": job["concurrency"], "items_per_request": job.get("items_per_request", 1),
        "requests": ok + failed, "ok": ok, "failed": failed, "statuses": statuses, "errors": errors,
        "seconds": seconds,
        "items_per_s": ok * job.get("items_per_request", 1) / seconds if seconds > 0 else 0.0,
        "p50_ms": percentile(50), "p90_ms": percentile(90), "p99_ms": percentile(99),
        "max_ms": float(ms.max()) if ok else None,
    }


# ---- used by the benchmarks that start this process ------------------------------------------------


def run_load(url: str, path: str, bodies: Path, clients: int, size: int, duration_s: float,
             max_requests: int = 2_000_000) -> dict:
    """One load point from a separate process (this file), `size` inputs per request."""
    import subprocess

    job = {"url": url, "path": path, "bodies": str(bodies), "concurrency": clients, "duration_s": duration_s,
           "warmup_s": min(2.0, duration_s / 5), "max_requests": max_requests, "items_per_request": size}
    out = subprocess.run([sys.executable, __file__, json.dumps(job)], check=True, capture_output=True, text=True,
                         timeout=duration_s + 120).stdout
    return json.loads(out)


def scrape(url: str) -> dict[str, float]:
    """The service's batching counters (round and batch sizes) from its /metrics."""
    import httpx

    return batching_counters(httpx.get(f"{url}/metrics", timeout=10).text)


def batching_counters(text: str) -> dict[str, float]:
    """atom_round_items_* and atom_batch_items_* of a /metrics text, summed over the served models."""
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith(("atom_round_items_", "atom_batch_items_")):
                values[sample.name] = values.get(sample.name, 0.0) + sample.value
    return values


def mean_between(after: dict, before: dict, name: str) -> float | None:
    """Mean of histogram `name` over the observations made between two scrapes."""
    count = after.get(f"{name}_count", 0) - before.get(f"{name}_count", 0)
    return (after.get(f"{name}_sum", 0) - before.get(f"{name}_sum", 0)) / count if count else None


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("job", help="JSON: url, path, bodies, concurrency, duration_s, warmup_s, max_requests, "
                                    "items_per_request (run_load writes it)")
    print(json.dumps(asyncio.run(generate_load(json.loads(parser.parse_args().job)))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
