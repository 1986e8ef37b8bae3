"""Where the service's threads spend their time while one model is flooded and another is light.

    pip install py-spy; python benchmarks/several_models_spy.py [--seconds 15]

The setting of `several_models.py fairness` under its Retry-After flood (A: the MiniLM bundle, 64
clients x 16 texts that wait 1 s after a 429; B: the small bundle at 2 clients x 1 text), with
py-spy sampling the service's threads at 200 Hz meanwhile. Prints, per thread, the share of the
samples in which it was busy and its busiest frames; the raw samples go to runs/several_models_spy.txt.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import multiprocessing
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, start_service, stop_service
from several_models import flood, load, summary


def busy_threads(raw: Path, seconds: float, rate: int, top: int = 5) -> list[str]:
    samples: collections.Counter = collections.Counter()
    frames: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        thread, *calls = stack.split(";")
        samples[thread] += int(count)
        if calls:
            frames[thread][calls[-1]] += int(count)
    lines = []
    for thread, count in samples.most_common(6):
        lines.append(f"{thread}: busy in {count / (seconds * rate):.0%} of the samples")
        lines += [f"    {n:6d}  {frame}" for frame, n in frames[thread].most_common(top)]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "bundles" / "tweets")
    parser.add_argument("--small", type=Path, default=ROOT / "bundles" / "tweets-small")
    parser.add_argument("--seconds", type=int, default=15)
    args = parser.parse_args(argv)
    spy_path = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    rate, raw = 200, ROOT / "runs" / "several_models_spy.txt"
    process, url = start_service(args.bundle, "--bundle", f"small={args.small}", "--max-queue-items", "256",
                                 "--max-inputs-per-request", "64", log_path=ROOT / "runs" / "several_models.log")
    port = int(url.rsplit(":", 1)[1])
    import httpx

    a = httpx.get(f"{url}/v1/models", timeout=10).json()["data"][0]["id"]
    try:
        asyncio.run(load(port, "small", 2, 1, 3.0))  # warm
        out = multiprocessing.Queue()
        flooding = multiprocessing.Process(target=flood, args=(port, a, args.seconds + 10, 1.0, out))
        flooding.start()
        time.sleep(3)
        spy = subprocess.Popen([spy_path, "record", "-p", str(process.pid), "-d", str(args.seconds), "-r", str(rate),
                                "--threads", "--nonblocking", "-f", "raw", "-o", str(raw)])
        light = asyncio.run(load(port, "small", 2, 1, args.seconds + 3))
        spy.wait()
        print("B", summary(light, args.seconds + 3))
        print("A", summary(out.get(timeout=300), args.seconds + 10))
        flooding.join()
    finally:
        stop_service(process)
    print("\n".join(busy_threads(raw, args.seconds, rate)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
