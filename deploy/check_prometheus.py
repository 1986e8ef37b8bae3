"""Live check: a real Prometheus scrapes a real Atomizer service, and the atom_* series come back.

    python deploy/check_prometheus.py [--bundle DIR] [--deadline-s 180]

(deploy/check_prometheus.sh installs Debian's prometheus first, then runs this.)

1. Start the service the way the image does (`python -m service`, settings from ATOM_*
   variables only) on 127.0.0.1, with --bundle or a tiny bundle made for the check.
2. Start Prometheus on 127.0.0.1 with deploy/prometheus/prometheus.yml, its target rewritten
   to the local service and its interval shortened, in a temporary storage folder.
3. Send a bounded burst of requests: atomize (with neighbors), embeddings, one invalid.
4. Through Prometheus's HTTP API: every atom_* series the service exposes is stored, the
   request counters moved, and every Grafana dashboard query returns data.
5. SIGTERM the service, as `docker stop` and Kubernetes do: it must shut down gracefully.

Everything it starts is stopped on the way out; every wait has a deadline.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from common import free_port  # noqa: E402  (one definition, shared with the benchmarks and tests)

ROOT = Path(__file__).resolve().parents[1]
SCRAPE_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "atomizer.json"
JOB = "atomizer"
SCRAPE_INTERVAL = "1s"  # the project's file says 5s; 1s keeps the check short


class CheckFailed(Exception):
    pass


class DeadlinePassed(CheckFailed):
    pass


def say(message: str) -> None:
    print(f"check_prometheus: {message}", flush=True)


def http(method: str, url: str, body: Any = None, timeout_s: float = 10.0) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_until(what: str, probe: Callable[[], bool], deadline: float, process: subprocess.Popen | None = None) -> None:
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise CheckFailed(f"{what}: the process exited with status {process.returncode}")
        try:
            if probe():
                return
        except (OSError, urllib.error.URLError):
            pass  # not listening yet
        time.sleep(0.25)
    raise DeadlinePassed(f"{what}: not reached before the deadline")


@contextmanager
def running(name: str, command: list[str], log_path: Path, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """A child process whose output goes to log_path; terminated (then killed) on the way out."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        try:
            yield process
        except BaseException:
            lines = log_path.read_text(errors="replace").splitlines()
            tail = [line for line in lines if " HTTP/1.1\" " not in line][-25:]  # access lines say little
            say(f"--- last lines of {name}'s log ---\n" + "\n".join(tail))
            raise
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)


def local_scrape_config(service_address: str) -> dict[str, Any]:
    """The project's scrape configuration, pointed at the local service."""
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    config["global"]["scrape_interval"] = SCRAPE_INTERVAL
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == JOB]
    for static in job["static_configs"]:
        static["targets"] = [service_address]
    return config


def example_inputs(model: dict[str, Any]) -> list[Any]:
    """Valid inputs for the served bundle, whatever its modality."""
    spec = model["input"]
    if spec["modality"] == "text":
        return ["what a lovely morning", "this is the worst service ever", "ok"]
    preprocess = spec.get("preprocess") or {}
    if preprocess.get("kind") == "patches":
        height, width = preprocess["image_shape"]
        return [[[((r * width + c + i) % 17) / 16 for c in range(width)] for r in range(height)] for i in range(3)]
    n = min(spec["max_components"], 16)
    f = spec["component_dim"]
    if f == 1:
        return [[((j + i) % 7) / 6 for j in range(n)] for i in range(3)]
    return [[[((j + k + i) % 5) / 4 for k in range(f)] for j in range(n)] for i in range(3)]


def send_traffic(base: str, seconds: float) -> int:
    """Requests for `seconds` (bounded): the counters, histograms and failures all move."""
    status, body = http("GET", f"{base}/v1/model")
    if status != 200:
        raise CheckFailed(f"GET /v1/model answered {status}: {body[:200]!r}")
    model = json.loads(body)
    inputs = example_inputs(model)
    sent = 0
    stop = time.monotonic() + seconds
    while time.monotonic() < stop and sent < 400:
        status, body = http("POST", f"{base}/v1/atomize", {"inputs": inputs, "neighbors": 3})
        if status != 200:
            raise CheckFailed(f"POST /v1/atomize answered {status}: {body[:300]!r}")
        status, body = http("POST", f"{base}/v1/embeddings", {"input": inputs, "model": model["name"]})
        if status != 200:
            raise CheckFailed(f"POST /v1/embeddings answered {status}: {body[:300]!r}")
        status, _ = http("POST", f"{base}/v1/atomize", {"inputs": []})  # invalid: counted as a failure
        if status != 422:
            raise CheckFailed(f"an empty atomize request answered {status}, expected 422")
        sent += 3
        time.sleep(0.05)
    return sent


def exposed_samples(base: str) -> set[str]:
    """The atom_* sample names the service exposes itself (what Prometheus must store)."""
    status, body = http("GET", f"{base}/metrics")
    if status != 200:
        raise CheckFailed(f"GET /metrics answered {status}")
    names = set()
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name.startswith("atom_") and not sample.name.endswith("_created"):
                names.add(sample.name)
    return names


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    status, body = http("GET", url)
    answer = json.loads(body)
    if status != 200 or answer.get("status") != "success":
        raise CheckFailed(f"query {expr!r} failed: {answer.get('error', body[:200])}")
    return answer["data"]["result"]


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of the dashboard, its variables filled in."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$instance", ".*").replace("$__rate_interval", "30s")
            queries.append((panel["title"], expr))
    return queries


def check_series(prometheus: str, expected: set[str], deadline: float) -> dict[str, int]:
    """Wait until Prometheus holds every expected atom_* sample name, with the traffic counted."""
    stored: dict[str, int] = {}

    def complete() -> bool:
        stored.clear()
        for row in query(prometheus, f'count by (__name__) ({{__name__=~"atom_.+", job="{JOB}"}})'):
            stored[row["metric"]["__name__"]] = int(row["value"][1])
        moved = query(prometheus, f'sum(atom_items_atomized_total{{job="{JOB}"}}) > 0')
        return expected <= stored.keys() and bool(moved)

    try:
        wait_until("every atom_* series stored in Prometheus", complete, deadline)
    except DeadlinePassed:
        raise CheckFailed(f"missing in Prometheus: {sorted(expected - stored.keys())}") from None
    return stored


def check_dashboard(prometheus: str, deadline: float) -> list[str]:
    """Every dashboard query evaluates and returns at least one series."""
    empty: list[str] = []

    def all_have_data() -> bool:
        empty[:] = [f"{title}: {expr}" for title, expr in dashboard_queries() if not query(prometheus, expr)]
        return not empty

    try:
        wait_until("every dashboard query returns data", all_have_data, deadline)
    except DeadlinePassed:
        raise CheckFailed("dashboard queries without data:\n  " + "\n  ".join(empty)) from None
    return [title for title, _ in dashboard_queries()]


def make_tiny_bundle(workdir: Path, deadline: float) -> Path:
    """A tiny text bundle through the real CLI (`atomize train`, `atomize export`): ~30 s on a CPU."""
    run_dir, bundle = workdir / "run", workdir / "bundle"
    model = json.dumps({"d_model": 32, "n_layers": 1, "embedding_dim": 16})
    for step in (
        ["train", "--dataset", "synthetic", "--out", str(run_dir), "--epochs", "1", "--limit", "400",
         "--device", "cpu", "--no-progress", "--model", model],
        ["export", str(run_dir), "--out", str(bundle)],
    ):
        command = [sys.executable, "-m", "training.cli", *step]
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                                timeout=max(1.0, deadline - time.monotonic()))
        if result.returncode != 0:
            raise CheckFailed(f"atomize {step[0]} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return bundle


def run_check(bundle: Path | None, deadline_s: float, workdir: Path) -> None:
    deadline = time.monotonic() + deadline_s
    prometheus_binary = shutil.which("prometheus")
    if prometheus_binary is None:
        raise CheckFailed("prometheus is not installed (deploy/check_prometheus.sh installs Debian's package)")
    if bundle is None:
        bundle = make_tiny_bundle(workdir, deadline)
        say(f"made a tiny bundle in {bundle}")
    service_port, prometheus_port = free_port(), free_port()
    base = f"http://127.0.0.1:{service_port}"
    prometheus = f"http://127.0.0.1:{prometheus_port}"

    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(local_scrape_config(f"127.0.0.1:{service_port}"), sort_keys=False))
    promtool = shutil.which("promtool")
    if promtool:
        subprocess.run([promtool, "check", "config", str(config_path)], check=True, capture_output=True, timeout=30)

    # Settings through the environment only, as in the image (CMD python -m service).
    service_env = {key: value for key, value in os.environ.items() if not key.startswith("ATOM_")}
    service_env.update(
        ATOM_BUNDLE=str(bundle), ATOM_HOST="127.0.0.1", ATOM_PORT=str(service_port), ATOM_DEVICE="cpu",
        ATOM_LOG_LEVEL="info", PYTHONPATH=str(ROOT),
    )
    prometheus_command = [
        prometheus_binary,
        f"--config.file={config_path}",
        f"--storage.tsdb.path={workdir / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{prometheus_port}",
        "--log.level=warn",
    ]
    with ExitStack() as stack:
        service = stack.enter_context(
            running("service", [sys.executable, "-m", "service"], workdir / "service.log", service_env)
        )
        wait_until("service /readyz answers 200", lambda: http("GET", f"{base}/readyz", timeout_s=2)[0] == 200,
                   min(deadline, time.monotonic() + 120), service)
        say(f"service ready on {base} (bundle {bundle})")
        expected = exposed_samples(base)

        server = stack.enter_context(running("prometheus", prometheus_command, workdir / "prometheus.log", dict(os.environ)))
        wait_until("Prometheus /-/ready answers 200", lambda: http("GET", f"{prometheus}/-/ready", timeout_s=2)[0] == 200,
                   deadline, server)
        say(f"prometheus ready on {prometheus}, scraping 127.0.0.1:{service_port} every {SCRAPE_INTERVAL}")

        wait_until("Prometheus scrapes the service (up == 1)",
                   lambda: [r for r in query(prometheus, f'up{{job="{JOB}"}}') if r["value"][1] == "1"], deadline)
        sent = send_traffic(base, seconds=4.0)
        expected |= exposed_samples(base)  # labelled series appear with their first request
        say(f"sent {sent} requests")

        stored = check_series(prometheus, expected, deadline)
        for name in sorted(expected):
            say(f"  {name}: {stored[name]} series")
        say(f"all {len(expected)} atom_* sample names the service exposes are in Prometheus")
        titles = check_dashboard(prometheus, deadline)
        say(f"all {len(titles)} dashboard queries return data ({len(set(titles))} panels)")

        service.send_signal(signal.SIGTERM)
        try:
            status = service.wait(timeout=60)
        except subprocess.TimeoutExpired:
            raise CheckFailed("service did not stop within 60 s of SIGTERM") from None
        # uvicorn re-raises the signal after a graceful shutdown, so -SIGTERM is a clean exit too;
        # the log line says the app's shutdown (queue drain) ran to the end.
        log = (workdir / "service.log").read_text(errors="replace")
        if status not in (0, -signal.SIGTERM) or "Application shutdown complete" not in log:
            raise CheckFailed(f"service did not shut down gracefully on SIGTERM (status {status})")
        say(f"service shut down gracefully on SIGTERM (status {status})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="bundle folder (default: a tiny bundle made for the check)")
    parser.add_argument("--deadline-s", type=float, default=180.0, help="the whole check's time limit")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="atom-prometheus-") as workdir:
        try:
            run_check(args.bundle, args.deadline_s, Path(workdir))
        except (CheckFailed, subprocess.SubprocessError) as exc:
            say(f"FAILED: {exc}")
            return 1
    say("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
