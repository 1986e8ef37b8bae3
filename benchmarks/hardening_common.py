"""What the hardening benchmarks share: a service process (this code or another checkout), results files.

Each benchmark runs the service as `python -m service` on 127.0.0.1 at a free port, from this
checkout or from `--before DIR` (an older checkout, e.g. `git archive <commit> | tar -x -C DIR`),
so one script measures both sides on the same machine, bundle and load.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_service(code: Path, bundle: Path, *flags: str, log_path: Path | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = open(log_path, "w") if log_path else subprocess.DEVNULL
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "--bundle", str(bundle), "--host", "127.0.0.1", "--port", str(port),
         "--device", "cpu", "--log-level", "warning", *flags],
        cwd=code, env={**os.environ, "PYTHONPATH": str(code)}, stdout=log, stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with {process.returncode} (see {log_path})")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError("the service did not become ready in 120 s")


def stop_service(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def machine() -> dict:
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}


def write_results(name: str, data: dict, markdown: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown.rstrip() + "\n")
    print(markdown)


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


class RawClient:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams: one connection, one request at a time.

    Much lighter than a full client library, so hundreds of them in one load process spend the
    shared CPU on the service rather than on themselves.
    """

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def post(self, path: str, body: bytes) -> int:
        """The response status; raises OSError / asyncio.IncompleteReadError when the connection fails."""
        return (await self.exchange(path, body))[0]

    async def exchange(self, path: str, body: bytes) -> tuple[int, bytes]:
        """The response status and body; raises like `post`."""
        import asyncio

        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        try:
            self.writer.write(head + body)
            await self.writer.drain()
            status_line = await self.reader.readuntil(b"\r\n")
            length, close = 0, False
            while (line := await self.reader.readuntil(b"\r\n")) != b"\r\n":
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
                elif name.lower() == "connection" and "close" in value.lower():
                    close = True
            answer = await self.reader.readexactly(length)
        except BaseException:
            await self.close()
            raise
        if close:
            await self.close()
        return int(status_line.split()[1]), answer

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = self.reader = None
