"""What the benchmarks share: the machine's description, a service process, results files.

- machine() / describe(): the one description of the machine a figure was measured on.
- free_port(), start_service() / stop_service() / running_service(): `python -m service` on
  127.0.0.1 at a free port, from this checkout or from an older one (`code`: code_at(commit,
  DIR)), so one script measures both sides on the same machine, bundle and load.
- read_records(): a JSON-lines results file, one record per job.
- write_results(), ms(), percentile(), RawClient: the hardening benchmarks' results and load.

Only the standard library at import time (httpx when a service is started), so the peer
benchmark's own environment (.venv-peers) can import it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


# ---- the machine -------------------------------------------------------------------------------


def machine(provider: str | None = None) -> dict:
    """The machine a figure is measured on: CPU model, cores, the 1-minute load average now (other
    work on the machine skews the figures), Python, platform, ONNX Runtime's version and, when
    given, the execution provider measured."""
    cpu = platform.processor() or platform.machine() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    out = {"cpu": cpu, "cores": os.cpu_count(), "load_average_1m_at_start": round(os.getloadavg()[0], 2),
           "python": platform.python_version(), "platform": platform.platform(),
           "onnxruntime": package_version("onnxruntime") or package_version("onnxruntime-gpu")}
    if provider is not None:
        out["provider"] = provider
    return out


def describe(m: dict, load: bool = True) -> str:
    """One line for a report: `CPU (N cores, load average L at start), Python V, onnxruntime V (provider)`;
    load=False leaves the load average out (a summary written after the measurements)."""
    at_start = m.get("load_average_1m_at_start")
    text = f"{m.get('cpu', 'unknown')} ({m.get('cores')} cores"
    text += f", load average {at_start} at start), " if load and at_start is not None else "), "
    text += f"Python {m.get('python')}"
    if m.get("onnxruntime"):
        text += f", onnxruntime {m['onnxruntime']}" + (f" ({m['provider']})" if m.get("provider") else "")
    return text


def package_version(dist: str) -> str | None:
    """The installed version of a distribution, None when it is not installed."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# ---- the service -------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def code_at(commit: str, into: Path) -> Path:
    """This repository's files at `commit` (a `git archive` unpacked into `into`), to start the
    service of an older commit beside this checkout's."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def start_service(bundle: Path, *flags: str, code: Path = ROOT, device: str = "cpu", log_path: Path | None = None,
                  timeout_s: float = 120.0, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """`python -m service` of the checkout `code` on `bundle` at a free port of 127.0.0.1, once its
    /readyz answers 200: (the process, its base URL). `flags` go after the benchmark's own
    (--bundle, --host, --port, --device, --log-level warning); `env` adds to its environment. Its
    output (stdout and stderr) goes to log_path, or nowhere; a RuntimeError, with the log's tail, if
    it exits or is not ready in timeout_s (then it is killed)."""
    port = free_port()
    command = [sys.executable, "-m", "service", "--bundle", str(bundle), "--host", "127.0.0.1", "--port", str(port),
               "--device", device, "--log-level", "warning", *flags]
    pythonpath = os.pathsep.join(filter(None, [str(code), os.environ.get("PYTHONPATH")]))
    return start_server(command, port, cwd=code, env={**(env or {}), "PYTHONPATH": pythonpath}, log_path=log_path,
                        timeout_s=timeout_s)


def start_server(command: list[str], port: int, *, cwd: Path = ROOT, env: dict[str, str] | None = None,
                 log_path: Path | None = None, timeout_s: float = 120.0) -> tuple[subprocess.Popen, str]:
    """A server process listening on 127.0.0.1:`port`, once GET /readyz answers 200: (the process,
    its base URL). `env` adds to the environment; the output goes to log_path, or nowhere; a
    RuntimeError, with the log's tail, if it exits or is not ready in timeout_s (then it is killed)."""
    import httpx

    if log_path:
        log_path.parent.mkdir(parents=True, exist_ok=True)  # e.g. runs/ on a fresh clone
    log = open(log_path, "w") if log_path else subprocess.DEVNULL
    try:
        process = subprocess.Popen(command, cwd=cwd, env={**os.environ, **(env or {})},
                                   stdout=log, stderr=subprocess.STDOUT)
    finally:
        if log_path:
            log.close()  # the child has its own copy
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            problem = f"the server exited with {process.returncode}"
            break
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            problem = f"the server was not ready in {timeout_s:g} s"
            break
        time.sleep(0.2)
    stop_service(process, timeout_s=5)
    tail = log_path.read_text(errors="replace")[-2000:] if log_path else "(no log kept)"
    raise RuntimeError(f"{problem}; {log_path or 'its log'}:\n{tail}")


def stop_service(process: subprocess.Popen, timeout_s: float = 30.0) -> None:
    """SIGINT (a stop without the SIGTERM drain), then SIGKILL after timeout_s; waits for the exit."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def running_service(bundle: Path, *flags: str, **options) -> Iterator[str]:
    """start_service(bundle, *flags, **options) for the length of a `with`: yields the base URL."""
    process, url = start_service(bundle, *flags, **options)
    try:
        yield url
    finally:
        stop_service(process)


def served_settings_sweep(systems: dict, texts: list[str], levels: tuple[int, ...], duration_s: float,
                          repeats: int) -> list[dict]:
    """One row per (system, clients, repeat): `systems` maps a key to (bundle folder, the service's
    flags); each is started afresh per repeat (the order alternates between repeats) and loaded with
    `levels` closed-loop clients x 1 text on /v1/embeddings for `duration_s` each, after a 2 s
    warm-up. Each row is loadgen's, plus system (the key), clients, repeat and the load average."""
    import tempfile

    from loadgen import run_load

    keys = list(systems)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        body = Path(tmp) / "bodies.jsonl"
        body.write_text("\n".join(json.dumps({"input": [text]}) for text in texts))
        for repeat in range(repeats):
            for key in keys if repeat % 2 == 0 else keys[::-1]:
                bundle_dir, flags = systems[key]
                with running_service(bundle_dir, *flags, log_path=Path(tmp) / "service.log") as url:
                    run_load(url, "/v1/embeddings", body, levels[0], 1, 2.0)  # warm-up, not counted
                    for clients in levels:
                        row = run_load(url, "/v1/embeddings", body, clients, 1, duration_s)
                        row.update(system=key, clients=clients, repeat=repeat, load_average_1m=os.getloadavg()[0])
                        rows.append(row)
                        print(f"served {key} {clients} clients: {row['items_per_s']:.0f} items/s, "
                              f"p99 {row['p99_ms'] or 0:.0f} ms", file=sys.stderr, flush=True)
    return rows


# ---- results -----------------------------------------------------------------------------------


def _job_key(record: dict) -> Hashable:
    return record.get("key") or (record["dataset"], record["method"], record["phase"])


def read_records(path: Path, key: Callable[[dict], Hashable] = _job_key, keep: str = "first") -> list[dict]:
    """The records of a JSON-lines results file (none if it does not exist), in file order; a job
    recorded twice (two runs that overlapped, a rerun) counts once: its first record, or its last
    with keep="last", in the place of its first. `key` says which records are the same job: by
    default record["key"], else (dataset, method, phase) (the quality suites' records)."""
    if keep not in ("first", "last"):
        raise ValueError(f"keep must be 'first' or 'last', not {keep!r}")
    records: dict = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        if line.strip():
            record = json.loads(line)
            job = key(record)
            if job not in records or keep == "last":
                records[job] = record
    return list(records.values())


def write_results(name: str, data: dict, markdown: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown.rstrip() + "\n")
    print(markdown)


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


# ---- load --------------------------------------------------------------------------------------

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


async def closed_loop(port: int, body_of: Callable[[int], bytes], clients: int, seconds: float,
                      path: str = "/v1/atomize", pause_on_429_s: float = 0.0) -> dict[str, list[float]]:
    """`clients` raw keep-alive clients on 127.0.0.1:port, client i sending body_of(i) again as soon as
    the last answer came, for `seconds`: the latencies by status ("error" for a dropped connection).
    `pause_on_429_s`: wait that long after a 429, as a client honouring Retry-After does."""
    latencies: dict[str, list[float]] = {}
    stop_at = time.perf_counter() + seconds

    async def client(index: int) -> None:
        http = RawClient("127.0.0.1", port)
        body = body_of(index)
        while time.perf_counter() < stop_at:
            sent = time.perf_counter()
            try:
                status = str(await http.post(path, body))
            except (OSError, asyncio.IncompleteReadError):
                status = "error"
            latencies.setdefault(status, []).append(time.perf_counter() - sent)
            if pause_on_429_s and status == "429":
                await asyncio.sleep(pause_on_429_s)
        await http.close()

    await asyncio.gather(*(client(i) for i in range(clients)))
    return latencies
