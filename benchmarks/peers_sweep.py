"""The peers' batch settings, chosen on the validation split as this service's were (issue 19: level ground).

    python benchmarks/peers_sweep.py [--duration 10] [--only infinity,ray-serve] [--fresh]

This service's batching default (the padding bound, service/app.py CPU_BATCH_PADDING) was chosen
among 6 settings on tweets of the validation split (benchmarks/results/batch_padding.md). Each peer
gets the same number of settings of its own batching knobs, on the same split:

- Infinity: `--batch-size` 4, 8, 16, 32 (its default), 64, 128; infinity-int8 the same six on its
  int8 file. infinity-nospin is the same server with ONNX Runtime's spinning off: it takes
  Infinity's choice.
- Ray Serve: `@serve.batch` max_batch_size 8, 32, 128, each with batch_wait_timeout_s 1 ms and 5 ms
  (5 ms and 32 are what the app used before).

For each setting a fresh server (its answers checked as in benchmarks/peers.py), then closed-loop
loads of 8, 32 and 128 clients x 1 validation tweet, `--duration` seconds each, from the same load
process as benchmarks/peers.py. The setting with the most items/s averaged over the three loads
(the rule of batch_padding.md) is chosen; ties go to the one listed first. Records:
benchmarks/results/peers_sweep.jsonl (a rerun skips points already there), the table
peers_sweep.md, and the choices peers_settings.json, which benchmarks/peers.py starts each peer with.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, describe, machine, read_records  # noqa: E402
from loadgen import run_load  # noqa: E402

log = logging.getLogger("benchmarks.peers_sweep")
RESULTS = ROOT / "benchmarks" / "results"
SETTINGS_FILE = RESULTS / "peers_settings.json"
CLIENTS = (8, 32, 128)
_INFINITY = [{"batch_size": size} for size in (4, 8, 16, 32, 64, 128)]
SWEEP: dict[str, list[dict]] = {
    "infinity": _INFINITY,
    "infinity-int8": _INFINITY,
    "ray-serve": [{"batch_size": size, "batch_wait_timeout_s": wait} for size in (8, 32, 128) for wait in (0.001, 0.005)],
}
SAME_AS = {"infinity-nospin": "infinity"}  # the same server and knobs; only ONNX Runtime's spinning differs


def setting_name(settings: dict) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in settings.items())


def key(record: dict) -> tuple:
    return record["system"], setting_name(record["settings"]), record["clients"]


def mean_items_per_s(records: list[dict], system: str, settings: dict) -> float | None:
    """items/s averaged over CLIENTS for one setting; None until every load has run."""
    by_clients = {r["clients"]: r["items_per_s"] for r in records
                  if r["system"] == system and r["settings"] == settings and "items_per_s" in r}
    if set(by_clients) != set(CLIENTS):
        return None
    return float(np.mean([by_clients[c] for c in CLIENTS]))


def choose(records: list[dict]) -> dict[str, dict]:
    """{system: its chosen settings} for every system whose whole sweep has run (the most mean
    items/s; ties: the first listed), with the systems that take another's choice (SAME_AS)."""
    chosen = {}
    for system, grid in SWEEP.items():
        means = [mean_items_per_s(records, system, settings) for settings in grid]
        if any(m is None for m in means):
            continue
        chosen[system] = grid[int(np.argmax(means))]  # argmax: the first of equal values
    for system, source in SAME_AS.items():
        if source in chosen:
            chosen[system] = chosen[source]
    return chosen


def validation_texts(count: int) -> list[str]:
    from training.data import load_dataset

    texts = load_dataset("tweets").validation.texts
    order = np.random.default_rng(0).permutation(len(texts))[:count]
    return [texts[i] for i in order]


def run_setting(system: str, settings: dict, texts: list[str], work: Path, duration_s: float, done: set,
                out: Path) -> None:
    from peers import append, bodies_file, peer_server

    todo = [c for c in CLIENTS if (system, setting_name(settings), c) not in done]
    if not todo:
        return
    with tempfile.TemporaryDirectory(dir=work) as tmp, peer_server(system, work / "minilm-onnx", Path(tmp), texts,
                                                                   settings) as info:
        if "unavailable" in info:
            raise RuntimeError(f"{system} ({setting_name(settings)}) cannot run here: {info['unavailable']}")
        path = bodies_file(Path(tmp), system, texts, 1, lambda g: json.dumps({"model": info["model"], "input": g}))
        for clients in todo:
            row = run_load(info["url"], info["path"], path, clients, 1, duration_s)
            row.update(system=system, settings=settings, clients=clients, inputs_per_request=1, split="validation",
                       version=info["version"], min_cosine=info["min_cosine"], load_average_1m=os.getloadavg()[0])
            log.info("%s %s, %d clients: %.0f items/s, p99 %.0f ms", system, setting_name(settings), clients,
                     row["items_per_s"], row["p99_ms"] or 0)
            append(out, row)


def report(records: list[dict], host: dict, duration_s: float) -> str:
    chosen = choose(records)
    lines = [
        "# The peers' batch settings, chosen on validation", "",
        f"`python benchmarks/peers_sweep.py` (make bench-peers-sweep) on {describe(host)}.",
        "Each peer's own batching knobs, as many settings as this service's padding bound got (6), on",
        f"tweets of the validation split, 1 per request, closed loop, {duration_s:g} s per load; chosen: the most",
        "items/s averaged over 8, 32 and 128 clients (bold). benchmarks/peers.py starts each peer with its",
        "choice (peers_settings.json); infinity-nospin takes Infinity's.", "",
        "| system | setting | items/s, 8 clients | 32 | 128 | mean | p99 ms, 8 / 32 / 128 | load avg |",
        "|---|---|---:|---:|---:|---:|---|---:|",
    ]
    for system, grid in SWEEP.items():
        for settings in grid:
            rows = {r["clients"]: r for r in records if r["system"] == system and r["settings"] == settings}
            if not rows:
                continue
            mean = mean_items_per_s(records, system, settings)
            name = setting_name(settings)
            bold = chosen.get(system) == settings
            cells = [f"{rows[c]['items_per_s']:.0f}" if c in rows else "–" for c in CLIENTS]
            p99 = " / ".join(f"{rows[c]['p99_ms']:.0f}" if c in rows and rows[c]["p99_ms"] else "–" for c in CLIENTS)
            load = max(r["load_average_1m"] for r in rows.values())
            lines.append(f"| {system} | {'**' + name + '**' if bold else name} | {' | '.join(cells)} | "
                         f"{'–' if mean is None else f'{mean:.0f}'} | {p99} | {load:.1f} |")
    lines += ["", "Chosen: " + "; ".join(f"{s}: {setting_name(v)}" for s, v in chosen.items()) + "."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from peers import PEERS_PYTHON

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per load")
    parser.add_argument("--only", help="comma-separated peers (default: all)")
    parser.add_argument("--fresh", action="store_true", help="forget the records already written")
    parser.add_argument("--out", type=Path, default=RESULTS / "peers_sweep.jsonl")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "peers")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not PEERS_PYTHON.exists():
        parser.error(f"no {PEERS_PYTHON}: make peers-setup")
    if args.fresh:
        args.out.unlink(missing_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    if not (args.work / "minilm-onnx").exists():
        import subprocess

        subprocess.run([str(PEERS_PYTHON), "benchmarks/peer_systems.py", "--export", str(args.work / "minilm-onnx")],
                       check=True, cwd=ROOT)
    texts = validation_texts(2048)
    only = set(args.only.split(",")) if args.only else set(SWEEP)
    done = {key(r) for r in read_records(args.out, key)}
    for system, grid in SWEEP.items():
        if system in only:
            for settings in grid:
                run_setting(system, settings, texts, args.work, args.duration, done, args.out)
    records = read_records(args.out, key)
    host = machine("CPUExecutionProvider")
    text = report(records, host, args.duration)
    args.out.with_suffix(".md").write_text(text + "\n")
    (args.out.parent / SETTINGS_FILE.name).write_text(json.dumps(choose(records), indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
