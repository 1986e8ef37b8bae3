"""Drain under load: SIGTERM while clients keep sending; every request sent gets a complete response.

    python benchmarks/drain.py --bundle BUNDLE [--before DIR] [--clients 64] [--drain-ms 3000]

Clients (raw HTTP/1.1 keep-alive, one input per request, full response) send back to back; a
probe polls /readyz every 20 ms. After 4 s the service gets SIGTERM. Every request is recorded
with the time it was sent relative to SIGTERM and its outcome: a status, "refused" (the connect
failed, so nothing was sent: after the drain new connections are refused by design, the load
balancer has stopped sending), or "no response" (the request was written, then the connection
was reset or closed before a whole response came back: a lost request). The target is 0 "no
response" in every phase, the last moments of the drain included. Results:
benchmarks/results/drain.{md,json}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from pathlib import Path

import httpx

from common import ROOT, RawClient, describe, machine, start_service, write_results

BODY = json.dumps({"inputs": ["what a great day"]}).encode()


async def run(process, url: str, clients: int, drain_s: float, total_s: float) -> dict:
    port = int(url.rsplit(":", 1)[1])
    records: list[tuple[float, str]] = []  # (sent - sigterm, outcome)
    sigterm_at: list[float] = []
    readyz_503_after: list[float] = []
    stop_at = time.perf_counter() + total_s

    async def client() -> None:
        http = RawClient("127.0.0.1", port)
        failures_after_drain = 0
        while time.perf_counter() < stop_at and failures_after_drain < 3:
            sent = time.perf_counter()
            if http.writer is None:  # connect first, so a refused connect is told apart from a lost request
                try:
                    http.reader, http.writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
                except (OSError, asyncio.TimeoutError) as exc:
                    outcome = f"refused:{type(exc).__name__}"
                    failures_after_drain += bool(sigterm_at and sent > sigterm_at[0] + drain_s)
                    records.append((sent, outcome))
                    await asyncio.sleep(0.05)
                    continue
            try:
                outcome = str(await asyncio.wait_for(http.post("/v1/atomize", BODY), 30))
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as exc:
                outcome = f"no response:{type(exc).__name__}"
                await http.close()
                failures_after_drain += bool(sigterm_at and sent > sigterm_at[0] + drain_s)
                await asyncio.sleep(0.05)
            records.append((sent, outcome))
        await http.close()

    async def probe() -> None:
        async with httpx.AsyncClient(timeout=5) as http:
            while time.perf_counter() < stop_at and not readyz_503_after:
                try:
                    status = (await http.get(f"{url}/readyz")).status_code
                except httpx.TransportError:
                    status = 0
                if sigterm_at and status != 200:
                    readyz_503_after.append(time.perf_counter() - sigterm_at[0])
                await asyncio.sleep(0.02)

    async def terminate() -> None:
        await asyncio.sleep(4.0)
        sigterm_at.append(time.perf_counter())
        process.send_signal(signal.SIGTERM)

    await asyncio.gather(*(client() for _ in range(clients)), probe(), terminate())
    exit_code = await asyncio.to_thread(process.wait, 60)
    t0 = sigterm_at[0]
    phases: dict[str, dict[str, int]] = {}
    for sent, outcome in records:
        phase = "before SIGTERM" if sent < t0 else ("during the drain" if sent < t0 + drain_s else "after the drain")
        counts = phases.setdefault(phase, {})
        counts[outcome] = counts.get(outcome, 0) + 1

    def lost(start: float, end: float) -> list[float]:
        return [sent - t0 for sent, outcome in records if start <= sent < end and outcome.startswith("no response")]

    before, during, after = lost(-1e9, t0), lost(t0, t0 + drain_s), lost(t0 + drain_s, 1e18)
    return {"exit_code": exit_code, "readyz_not_200_after_s": readyz_503_after[0] if readyz_503_after else None,
            "phases": phases, "no_response_sent_before_sigterm": len(before),
            "no_response_sent_during_drain": len(during),
            "no_response_during_drain_sent_at_s": [min(during), max(during)] if during else None,
            "no_response_sent_after_drain": len(after),
            "refused_connects": sum(1 for _, outcome in records if outcome.startswith("refused")),
            "requests": len(records)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "bundles" / "tweets")
    parser.add_argument("--before", type=Path, help="an older checkout to measure too (with the same drain)")
    parser.add_argument("--before-label", default="before", help="what to call it in the results, e.g. its commit")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--drain-ms", type=float, default=3000.0)
    args = parser.parse_args(argv)
    flags, drain_s = ("--drain-ms", f"{args.drain_ms:g}"), args.drain_ms / 1000
    sides = ([(args.before_label, args.before)] if args.before else []) + [("after", ROOT)]
    rows = []
    for side, code in sides:
        process, url = start_service(args.bundle, *flags, code=code, log_path=Path(f"/tmp/drain_{side}.log"))
        try:
            row = {"side": side, "clients": args.clients, "drain_s": drain_s,
                   **asyncio.run(run(process, url, args.clients, drain_s, total_s=4.0 + drain_s + 3.0))}
        finally:
            if process.poll() is None:
                process.kill()
        rows.append(row)
        print(json.dumps(row))
    lines = ["# Drain: SIGTERM under load", "",
             "`python benchmarks/drain.py --bundle BUNDLE --before DIR --before-label LABEL "
             f"--drain-ms {args.drain_ms:g}`: "
             f"{args.clients} keep-alive clients, SIGTERM after 4 s. Outcomes by when the request was sent: a status; "
             "`refused` = the connect failed, nothing was sent (by design once the drain is over); `no response` = "
             "the request was written and the connection was reset or closed before a whole response came back "
             "(a lost request; target 0); a 503 answers a request that reached the server after its drain had "
             "ended (the phases go by the client's clock, whose drain starts a little before the server's).", "",
             "| code | drain (s) | /readyz not 200 after (s) | sent before SIGTERM | sent during the drain | "
             "sent after the drain | no response: sent before SIGTERM | no response: sent during the drain "
             "(when, s after SIGTERM) | no response: sent after the drain | exit code |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        def show(phase: str) -> str:
            return ", ".join(f"{k}: {v}" for k, v in sorted(row["phases"].get(phase, {}).items())) or "-"
        readyz, when = row["readyz_not_200_after_s"], row["no_response_during_drain_sent_at_s"]
        in_drain = f"{row['no_response_sent_during_drain']}" + (f" ({when[0]:.2f}-{when[1]:.2f})" if when else "")
        lines.append(f"| {row['side']} | {row['drain_s']:g} | {'-' if readyz is None else f'{readyz:.2f}'} | "
                     f"{show('before SIGTERM')} | {show('during the drain')} | {show('after the drain')} | "
                     f"{row['no_response_sent_before_sigterm']} | {in_drain} | {row['no_response_sent_after_drain']} | "
                     f"{row['exit_code']} |")
    m = machine()
    lines += ["", f"Machine: {describe(m)}. Bundle: `{args.bundle.name}`."]
    write_results("drain", {"machine": m, "bundle": str(args.bundle), "rows": rows}, "\n".join(lines))


if __name__ == "__main__":
    main()
