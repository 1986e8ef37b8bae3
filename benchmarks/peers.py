"""Side by side, one run, one machine: this service against the servers people pick instead.

    python benchmarks/peers.py [--duration 30] [--only atomizer,infinity,...] [--quick] [--profile]

Every system serves all-MiniLM-L6-v2 on the CPU and gets the same inputs (the tweets test split,
in a fixed random order) from the same load process (benchmarks/loadgen.py: closed loop, 1, 8,
32 and 128 concurrent keep-alive clients, 1 and 16 inputs per request, `--duration` seconds per
point after a warm-up, bounded by time and count):

- atomizer: this service (`python -m service`) on the default bundle (MiniLM + the atom head),
  fp32, /v1/embeddings (the OpenAI shape the peers answer too); `atomizer-int8` the int8 copy
  (its own row, never compared with a peer's fp32); `atomizer-full` /v1/atomize with the default
  response (composition, roles, 5 neighbors); `atomizer-nobatch` one item per batch;
  `atomizer-before` the service as it was before the fast path (h11 + asyncio, no padding bound).
- infinity and ray-serve (benchmarks/peer_systems.py, in their own environment .venv-peers made by
  benchmarks/peer_apps/setup_peers.sh) on one plain MiniLM ONNX file, each with the batch settings
  that benchmarks/peers_sweep.py chose for it on validation (results/peers_settings.json); infinity-nospin: Infinity with
  ONNX Runtime's thread spinning off, as this service and the Ray app run; infinity-int8: Infinity
  on the int8 file it prefers on a CPU (dynamic quantisation; its own row beside atomizer-int8,
  answers checked against that file run in process); st: sentence-transformers
  `encode` in process, no HTTP (the floor).
- small, small-full: the small from-scratch bundle (bundles/tweets-small), when it exists.

Each answer set is checked before its load (peers against sentence-transformers, this service
against its own model run in process). For every row of this service, `raw` is ONNX Runtime in
this process on the batches the service's own policy makes from rounds of the size the server
saw (from its /metrics), run by as many workers with as many threads each as the service's, so
served/raw is the cost of everything but the model. Records go to
benchmarks/results/peers.jsonl (a rerun skips points already there); benchmarks/peers_report.py
writes the table, the plot and the targets.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import machine, read_records, running_service  # noqa: E402
from loadgen import mean_between, run_load, scrape  # noqa: E402
from serve import in_flight, raw_for, raw_runtime  # noqa: E402

log = logging.getLogger("benchmarks.peers")
RESULTS = ROOT / "benchmarks" / "results"
PEERS_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
CHECK_ITEMS = 16


@dataclass(frozen=True)
class System:
    name: str
    kind: str  # "ours" | "peer" | "in-process"
    path: str = "/v1/embeddings"
    flags: tuple[str, ...] = ()
    bundle: str = "bundles/tweets"
    clients: tuple[int, ...] = (1, 8, 32, 128)
    sizes: tuple[int, ...] = (1, 16)
    precision: str = "fp32"
    notes: str = ""


FP32 = ("--precision", "fp32")
SYSTEMS = [
    System("atomizer", "ours", flags=FP32),
    System("atomizer-int8", "ours", flags=("--precision", "int8"), precision="int8"),
    System("atomizer-full", "ours", path="/v1/atomize", flags=FP32, sizes=(1,),
           notes="default response: embedding, composition, roles, 5 neighbors"),
    System("atomizer-nobatch", "ours", flags=(*FP32, "--max-batch-items", "1"), clients=(8, 32), sizes=(1,)),
    System("atomizer-h11", "ours", flags=(*FP32, "--http", "h11", "--loop", "asyncio"), clients=(32, 128), sizes=(1,),
           notes="h11 + asyncio (the padding bound on)"),
    System("atomizer-before", "ours", flags=(*FP32, "--http", "h11", "--loop", "asyncio", "--max-batch-padding", "inf"),
           clients=(32, 128), sizes=(1,), notes="before the fast path: h11, asyncio, one padded batch per round"),
    System("infinity", "peer"),
    System("infinity-nospin", "peer", clients=(8, 32, 128),
           notes="ONNX Runtime's thread spinning off in its sessions (peer_apps/no_spin), as this service runs"),
    System("infinity-int8", "peer", clients=(8, 32, 128), sizes=(1,), precision="int8",
           notes="model.onnx under ONNX Runtime's dynamic int8 quantisation, the file Infinity prefers on a CPU"),
    System("ray-serve", "peer"),
    System("st", "in-process", clients=(1,), sizes=(1, 16, 32)),
    System("small", "ours", bundle="bundles/tweets-small"),
    System("small-full", "ours", path="/v1/atomize", bundle="bundles/tweets-small", sizes=(1,)),
]


# ---- records -------------------------------------------------------------------------------------


def key(record: dict) -> tuple:
    """What makes two records the same point (read_records(path, key))."""
    return record["system"], record["clients"], record["inputs_per_request"]


def append(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as out:
        out.write(json.dumps(record) + "\n")


# ---- load ------------------------------------------------------------------------------------------


def bodies_file(tmp: Path, name: str, texts: list[str], size: int, make) -> Path:
    path = tmp / f"{name}-{size}.jsonl"
    groups = [texts[i : i + size] for i in range(0, len(texts) - size + 1, size)]
    path.write_text("\n".join(make(group) for group in groups))
    return path


# ---- this service ---------------------------------------------------------------------------------


def run_ours(system: System, texts: list[str], tmp: Path, duration_s: float, done: set, out: Path,
             profile: bool) -> None:
    import httpx

    from contract.bundle import load_bundle

    bundle_dir = ROOT / system.bundle
    field_name = "input" if system.path == "/v1/embeddings" else "inputs"
    bodies = {size: bodies_file(tmp, system.name, texts, size, lambda g: json.dumps({field_name: g}))
              for size in system.sizes}
    todo = [(c, s) for s in system.sizes for c in system.clients if (system.name, c, s) not in done]
    if not todo and not profile:
        return
    rows = []
    with running_service(bundle_dir, *system.flags, log_path=tmp / f"{system.name}.log") as url:
        info = wait_for_bank_index(url)
        batching = info["batching"]
        answer = httpx.post(url + system.path, json={field_name: texts[:CHECK_ITEMS]}, timeout=60).json()
        served = np.asarray([r["embedding"] for r in answer.get("data", answer.get("results"))], np.float32)
        for clients, size in todo:
            before = scrape(url)
            row = run_load(url, system.path, bodies[size], clients, size, duration_s)
            after = scrape(url)
            row.update(mean_round_items=mean_between(after, before, "atom_round_items"),
                       mean_batch_items=mean_between(after, before, "atom_batch_items"))
            row.update(system=system.name, kind=system.kind, clients=clients, inputs_per_request=size,
                       model=f"{info['name']} {info['version']}", precision=info["runtime"]["precision"],
                       path=system.path, batching=batching, workers=info["runtime"].get("workers", 1),
                       threads_per_worker=info["runtime"].get("threads_per_worker"), load_average_1m=os.getloadavg()[0])
            log.info("%s %d clients x %d: %.0f items/s p50 %.0f ms p99 %.0f ms, round %.1f batch %.1f, %d failed",
                     system.name, clients, size, row["items_per_s"], row["p50_ms"] or 0, row["p99_ms"] or 0,
                     row["mean_round_items"] or 0, row["mean_batch_items"] or 0, row["failed"])
            rows.append(row)
        if profile:
            profile_point(url, system, bodies[1], duration_s)
    # Raw, with the server stopped: the same batches the service's policy makes, in process.
    bundle = load_bundle(bundle_dir)
    runtime = raw_runtime(bundle, info, device="cpu", precision=rows[0]["precision"] if rows else system.precision)
    items = runtime.prepare(texts[:2048])
    expected = np.stack([r.embedding for r in runtime.run(items[:CHECK_ITEMS], record=False)])
    cosine = float(np.min(np.sum(served * expected, 1) / np.linalg.norm(served, axis=1) / np.linalg.norm(expected, axis=1)))
    if cosine < 0.999:  # a fast wrong answer is no result: stop before recording anything
        raise RuntimeError(f"{system.name}: served embeddings differ from the model run in process (cosine {cosine:.6f})")
    cache: dict = {}
    for row in rows:
        raw = raw_for(runtime, items, row, batching, min(8.0, duration_s / 3), cache,
                      in_flight(info["runtime"].get("workers", 1), row["clients"], row["inputs_per_request"]))
        row.update(raw_items_per_s=raw, served_over_raw=row["items_per_s"] / raw, min_cosine_vs_in_process=cosine,
                   notes=system.notes)
        append(out, row)


def wait_for_bank_index(url: str, timeout_s: float = 300.0) -> dict:
    """/v1/model once the bank has no index pending (a large bundle-own bank gets one built after
    start-up, service/app.py index_own_bank), so the build does not run during a measured point."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        info = httpx.get(f"{url}/v1/model", timeout=10).json()
        if "index_pending" not in info["bank"] or time.monotonic() > deadline:
            return info
        time.sleep(0.5)


def profile_point(url: str, system: System, bodies: Path, duration_s: float) -> None:
    """py-spy on the server during one more point at 32 clients: a flame graph and the raw stacks."""
    pid = subprocess.check_output(["pgrep", "-f", "--", f"--port {url.rsplit(':', 1)[1]}"], text=True).split()[0]
    spy = str(Path(sys.executable).parent / "py-spy")
    seconds = str(int(duration_s))
    spies = [subprocess.Popen([spy, "record", "-p", pid, "-d", seconds, "--nonblocking", "--threads", "-f", fmt,
                               "-o", str(RESULTS / name)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for fmt, name in (("raw", "profile_serve.txt"), ("flamegraph", "profile_serve.svg"))]
    row = run_load(url, system.path, bodies, 32, 1, duration_s)
    for spy_process in spies:
        spy_process.wait(timeout=120)
    (RESULTS / "profile_serve.json").write_text(json.dumps({"system": system.name, "flags": system.flags,
                                                             "load": row}, indent=2) + "\n")


# ---- the peers -------------------------------------------------------------------------------------


@contextlib.contextmanager
def peer_server(name: str, model_dir: Path, tmp: Path, texts: list[str], settings: dict | None = None):
    """A peer held up by peer_apps/host.py, with `settings` (its batch settings) or its defaults."""
    check = tmp / "check.json"
    check.write_text(json.dumps(texts[:CHECK_ITEMS]))
    host = ROOT / "benchmarks" / "peer_apps" / "host.py"
    process = subprocess.Popen([str(PEERS_PYTHON), str(host), name, str(model_dir), str(tmp / name),
                                str(tmp / f"{name}.log"), str(check), json.dumps(settings or {})],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        line = process.stdout.readline()  # the peer's own start-up bound (180 s) applies inside
        info = json.loads(line) if line else {"unavailable": f"exited with {process.wait()}: see {tmp / name}.log"}
        yield info
    finally:
        process.stdin.close()
        try:
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)


def chosen_settings() -> dict[str, dict]:
    """Each peer's batch settings as benchmarks/peers_sweep.py chose them on validation ({} before it ran)."""
    path = RESULTS / "peers_settings.json"
    return json.loads(path.read_text()) if path.exists() else {}


def run_peer(system: System, texts: list[str], tmp: Path, duration_s: float, done: set, out: Path,
             model_dir: Path) -> None:
    todo = [(c, s) for s in system.sizes for c in system.clients if (system.name, c, s) not in done]
    if not todo:
        return
    settings = chosen_settings().get(system.name, {})
    with peer_server(system.name, model_dir, tmp, texts, settings) as info:
        if "unavailable" in info:
            log.error("%s cannot run here: %s", system.name, info["unavailable"])
            append(out, {"system": system.name, "kind": "peer", "clients": 0, "inputs_per_request": 0,
                         "unavailable": info["unavailable"]})
            return
        log.info("%s ready in %.1f s (%s), min cosine %.6f", system.name, info["startup_s"], info["version"],
                 info["min_cosine"])
        for clients, size in todo:
            path = bodies_file(tmp, system.name, texts, size,
                               lambda g: json.dumps({"model": info["model"], "input": g}))
            row = run_load(info["url"], info["path"], path, clients, size, duration_s)
            row.update(system=system.name, kind="peer", clients=clients, inputs_per_request=size,
                       model="all-MiniLM-L6-v2 (model.onnx)", precision=system.precision, path=info["path"],
                       version=info["version"], min_cosine_vs_sentence_transformers=info["min_cosine"],
                       settings=settings, settings_source="peers_settings.json" if settings else "defaults",
                       load_average_1m=os.getloadavg()[0])
            log.info("%s %d clients x %d: %.0f items/s p50 %.0f ms p99 %.0f ms, %d failed", system.name, clients,
                     size, row["items_per_s"], row["p50_ms"] or 0, row["p99_ms"] or 0, row["failed"])
            append(out, row)


def run_st(system: System, texts: list[str], duration_s: float, done: set, out: Path) -> None:
    for size in system.sizes:
        if (system.name, 1, size) in done:
            continue
        code = ("import json, sys; sys.path.insert(0, 'benchmarks'); import peer_systems as p; "
                f"t = json.load(open(sys.argv[1])); print(json.dumps(p.st_throughput(t, {size}, {duration_s})))")
        with tempfile.NamedTemporaryFile("w", suffix=".json") as handle:
            json.dump(texts, handle)
            handle.flush()
            result = json.loads(subprocess.run([str(PEERS_PYTHON), "-c", code, handle.name], check=True, cwd=ROOT,
                                               capture_output=True, text=True).stdout.splitlines()[-1])
        row = {"system": "st", "kind": "in-process", "clients": 1, "inputs_per_request": size, "failed": 0,
               "items_per_s": result["items_per_s"], "p50_ms": None, "p99_ms": None, "precision": "fp32",
               "model": "all-MiniLM-L6-v2 (sentence-transformers)", "detail": result,
               "load_average_1m": os.getloadavg()[0]}
        log.info("st batch %d: %.0f items/s", size, row["items_per_s"])
        append(out, row)


# ---- main ------------------------------------------------------------------------------------------


def test_texts(count: int) -> list[str]:
    from training.data import load_dataset

    texts = load_dataset("tweets").test.texts
    order = np.random.default_rng(0).permutation(len(texts))[:count]
    return [texts[i] for i in order]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds measured per point")
    parser.add_argument("--only", help="comma-separated systems (default: all)")
    parser.add_argument("--quick", action="store_true", help="5 s points, 8 and 32 clients, 1 input per request")
    parser.add_argument("--profile", action="store_true", help="py-spy the atomizer at 32 clients")
    parser.add_argument("--fresh", action="store_true", help="forget the records already written")
    parser.add_argument("--out", type=Path, default=RESULTS / "peers.jsonl")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "peers")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    duration = 5.0 if args.quick else args.duration
    only = set(args.only.split(",")) if args.only else None
    texts = test_texts(4096)
    if args.fresh:
        args.out.unlink(missing_ok=True)
        args.out.with_suffix(".machine.json").unlink(missing_ok=True)
    done = {key(r) for r in read_records(args.out, key)}
    args.work.mkdir(parents=True, exist_ok=True)
    meta = args.out.with_suffix(".machine.json")
    if not meta.exists():
        meta.write_text(json.dumps({"machine": machine("CPUExecutionProvider"), "command":
                                    "python benchmarks/peers.py " + " ".join(argv or sys.argv[1:])}, indent=2) + "\n")
    model_dir = None
    for system in SYSTEMS:
        if only is not None and system.name not in only:
            continue
        if args.quick:
            system = System(**{**system.__dict__, "clients": tuple(c for c in system.clients if c in (1, 8, 32)),
                               "sizes": system.sizes[:1]})
        if system.kind == "ours" and not (ROOT / system.bundle / "manifest.json").exists():
            log.warning("skipping %s: no bundle at %s (make bundle-small)", system.name, system.bundle)
            continue
        if system.kind != "ours" and not PEERS_PYTHON.exists():
            log.warning("skipping %s: no %s (bash benchmarks/peer_apps/setup_peers.sh)", system.name, PEERS_PYTHON)
            continue
        with tempfile.TemporaryDirectory(dir=args.work) as tmp:
            if system.kind == "ours":
                run_ours(system, texts, Path(tmp), duration, done, args.out,
                         args.profile and system.name == "atomizer")
            elif system.kind == "peer":
                if model_dir is None:
                    model_dir = args.work / "minilm-onnx"
                    subprocess.run([str(PEERS_PYTHON), "benchmarks/peer_systems.py", "--export", str(model_dir)],
                                   check=True, cwd=ROOT)
                run_peer(system, texts, Path(tmp), duration, done, args.out, model_dir)
            else:
                run_st(system, texts, min(duration, 15.0), done, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
