"""The load generator of the serving benchmarks against a tiny local HTTP server."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from loadgen import batching_counters, generate_load, mean_between  # noqa: E402


async def tiny_server(seen: list[bytes]) -> asyncio.AbstractServer:
    """Answers each request by its body: "chunked" in chunks, "fail" with 503, else by length."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if not head:
                break
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length"))
            body = await reader.readexactly(length)
            seen.append(body)
            if b"chunked" in body:
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
            else:
                status = b"503 Service Unavailable" if b"fail" in body else b"200 OK"
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 7\r\n\r\n{\"a\":1}")
            await writer.drain()

    async def guarded(reader, writer):
        try:
            await handle(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    return await asyncio.start_server(guarded, "127.0.0.1", 0)


def test_counts_answers_and_failures_and_stops_at_the_request_bound(tmp_path):
    bodies = tmp_path / "bodies.jsonl"
    bodies.write_text("\n".join(json.dumps({"input": [kind]}) for kind in ("plain", "chunked", "fail", "plain")))
    seen: list[bytes] = []

    async def main():
        server = await tiny_server(seen)
        port = server.sockets[0].getsockname()[1]
        job = {"url": f"http://127.0.0.1:{port}", "path": "/v1/embeddings", "bodies": str(bodies),
               "concurrency": 3, "duration_s": 30.0, "warmup_s": 0.0, "max_requests": 40, "items_per_request": 2}
        try:
            return await generate_load(job)
        finally:
            server.close()

    result = asyncio.run(main())
    assert len(seen) == 40 and result["requests"] == 40  # stopped by the count, long before 30 s
    assert result["statuses"] == {"200": 30, "503": 10} and result["errors"] == {}
    assert result["ok"] == 30 and result["failed"] == 10
    assert result["items_per_s"] > 0 and result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]
    assert {json.loads(b)["input"][0] for b in seen} == {"plain", "chunked", "fail"}


def test_batching_counters_sum_the_served_models_and_give_the_mean_between_scrapes():
    before = batching_counters('atom_batch_items_count{model="a"} 2.0\natom_batch_items_sum{model="a"} 10.0\n'
                               'atom_queue_items{model="a"} 3.0\n')
    after = batching_counters('atom_batch_items_count{model="a"} 4.0\natom_batch_items_sum{model="a"} 30.0\n'
                              'atom_batch_items_count{model="b"} 2.0\natom_batch_items_sum{model="b"} 4.0\n')
    assert before == {"atom_batch_items_count": 2.0, "atom_batch_items_sum": 10.0}  # only the batching counters
    assert after == {"atom_batch_items_count": 6.0, "atom_batch_items_sum": 34.0}
    assert mean_between(after, before, "atom_batch_items") == 6.0  # (34 - 10) / (6 - 2)
    assert mean_between(after, after, "atom_batch_items") is None
