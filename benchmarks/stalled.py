"""Stalled clients: 2,000 sockets that stop mid-header, mid-body or say nothing, while normal clients work.

    python benchmarks/stalled.py --bundle BUNDLE [--before DIR] [--sockets 2000]

The stalled sockets are opened first (a third silent, a third stopping mid-header, a third
stopping mid-body); then 8 normal clients send /v1/atomize requests (a new connection each) for
10 s, and the stalled sockets are watched for up to 40 s: how many the server has closed, and
when the last one went. Results: benchmarks/results/stalled.{md,json}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from common import ROOT, RawClient, describe, machine, ms, percentile, start_service, stop_service, write_results

HEADER_STALL = b"POST /v1/atomize HTTP/1.1\r\nHost: x\r\nContent-Type: appl"
BODY_STALL = b"POST /v1/atomize HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"inputs\": ["
BODY = json.dumps({"inputs": ["what a great day"]}).encode()


async def run(port: int, sockets: int, watch_s: float) -> dict:
    stalled = []
    for i in range(sockets):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        if i % 3:
            writer.write(HEADER_STALL if i % 3 == 1 else BODY_STALL)
            await writer.drain()
        stalled.append((reader, writer))
    opened = time.perf_counter()
    closed_at: list[float] = []

    async def watch(reader: asyncio.StreamReader) -> None:
        try:
            await asyncio.wait_for(reader.read(1024), watch_s)  # b"" (or an error) = closed by the server
            closed_at.append(time.perf_counter() - opened)
        except (TimeoutError, asyncio.TimeoutError):
            pass
        except OSError:
            closed_at.append(time.perf_counter() - opened)

    watchers = [asyncio.create_task(watch(reader)) for reader, _ in stalled]
    latencies: list[float] = []
    failures: dict[str, int] = {}

    async def normal() -> None:
        stop_at = time.perf_counter() + 10.0
        while time.perf_counter() < stop_at:
            http = RawClient("127.0.0.1", port)
            sent = time.perf_counter()
            try:
                status = await asyncio.wait_for(http.post("/v1/atomize", BODY), 30)
                if status == 200:
                    latencies.append(time.perf_counter() - sent)
                else:
                    failures[str(status)] = failures.get(str(status), 0) + 1
            except (OSError, asyncio.IncompleteReadError, TimeoutError, asyncio.TimeoutError) as exc:
                failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1
            await http.close()

    await asyncio.gather(*(normal() for _ in range(8)))
    await asyncio.gather(*watchers)
    for _, writer in stalled:
        writer.close()
    return {"stalled_sockets": sockets, "closed_by_server": len(closed_at),
            "last_closed_after_s": max(closed_at) if closed_at else None,
            "normal_ok": len(latencies), "normal_failed": failures,
            "normal_p50_s": percentile(latencies, 50), "normal_p99_s": percentile(latencies, 99)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "bundles" / "tweets")
    parser.add_argument("--before", type=Path, help="an older checkout to measure too")
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--watch-s", type=float, default=40.0)
    args = parser.parse_args(argv)
    runs = ([("before", args.before, ())] if args.before else []) + [
        ("after, defaults (max_connections 2048, read_timeout_ms 15000)", ROOT, ()),
        ("after, max_connections 500", ROOT, ("--max-connections", "500")),
    ]
    rows = []
    for name, code, flags in runs:
        process, url = start_service(args.bundle, *flags, code=code, log_path=Path("/tmp/stalled.log"))
        try:
            row = {"run": name, **asyncio.run(run(int(url.rsplit(":", 1)[1]), args.sockets, args.watch_s))}
        finally:
            stop_service(process)
        rows.append(row)
        print(json.dumps(row))
    lines = ["# Stalled clients", "",
             f"`python benchmarks/stalled.py --bundle BUNDLE --before DIR --sockets {args.sockets}`: the stalled "
             f"sockets are watched for {args.watch_s:g} s; 8 normal clients send requests for 10 s meanwhile.", "",
             "| run | stalled sockets | closed by the server | last closed after (s) | normal requests ok | "
             "failed | p50 (ms) | p99 (ms) |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        last = row["last_closed_after_s"]
        lines.append(f"| {row['run']} | {row['stalled_sockets']} | {row['closed_by_server']} | "
                     f"{'-' if last is None else f'{last:.1f}'} | {row['normal_ok']} | {row['normal_failed'] or 0} | "
                     f"{ms(row['normal_p50_s'])} | {ms(row['normal_p99_s'])} |")
    m = machine()
    lines += ["", f"Machine: {describe(m)}. Bundle: `{args.bundle.name}`."]
    write_results("stalled", {"machine": m, "bundle": str(args.bundle), "rows": rows}, "\n".join(lines))


if __name__ == "__main__":
    main()
