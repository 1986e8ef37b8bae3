"""What the default bundle's graph costs against the plain MiniLM graph the peers serve.

    python benchmarks/graph_cost.py [--bundle bundles/tweets] [--plain runs/peers/minilm-onnx/model.onnx]

Both files run in this process with the same ONNX Runtime session options as the service, on
the same batches: 1,024 tweets of the test split (the peer benchmark's inputs) tokenized by the
bundle's tokenizer, cut by the service's own policy (rounds of 32, padding bound 0.1). The
plain file is made by `benchmarks/peer_systems.py --export` (benchmarks/peers.py does it).
Runs alternate, three each; the best of each is kept. Writes benchmarks/results/graph_cost.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from batch_padding import policy_batches  # noqa: E402


def best_items_per_s(sessions: dict, feeds: list[dict], rounds: int = 3) -> dict[str, float]:
    """{name: items/s}: every (session, outputs) runs all the feeds in turn, `rounds` times
    alternating with the others (after one warm-up call each round); the best round is kept."""
    best = {name: 0.0 for name in sessions}
    for _ in range(rounds):
        for name, (session, outputs) in sessions.items():
            session.run(outputs, feeds[0])
            done, started = 0, time.perf_counter()
            for feed in feeds:
                session.run(outputs, feed)
                done += len(feed["attention_mask"])
            best[name] = max(best[name], done / (time.perf_counter() - started))
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "bundles" / "tweets")
    parser.add_argument("--plain", type=Path, default=ROOT / "runs" / "peers" / "minilm-onnx" / "model.onnx")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)

    import onnxruntime as ort

    from contract.bundle import load_bundle
    from contract.runner import session_options
    from peers import test_texts
    from service.runtime import Runtime

    bundle = load_bundle(args.bundle)
    runtime = Runtime(bundle, device="cpu", precision="fp32")
    items = runtime.prepare(test_texts(1024))
    feeds = policy_batches(runtime, items, 32, 0.1)
    sessions = {"bundle": (runtime.session, ["embedding", "roles", "composition"]),
                "plain": (ort.InferenceSession(str(args.plain), session_options(), providers=["CPUExecutionProvider"]),
                          None)}
    if bundle.model_path("int8") is not None:  # the copy the service runs on a CPU
        sessions["bundle int8"] = (Runtime(bundle, device="cpu", precision="int8").session,
                                   ["embedding", "roles", "composition"])
    load = os.getloadavg()[0]
    best = best_items_per_s(sessions, feeds)
    result = {"command": "python benchmarks/graph_cost.py " + " ".join(argv or sys.argv[1:]),
              "graph": bundle.manifest.graph, "load_average_before": load, "onnxruntime": ort.__version__, "items": len(items), "mean_batch_items": len(items) / len(feeds),
              "items_per_s": best, "bundle_over_plain": best["bundle"] / best["plain"]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "graph_cost.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# The default bundle's graph against the plain MiniLM graph", "",
             f"`{result['command'].strip()}`, onnxruntime {ort.__version__}, {len(items)} test tweets cut by the "
             f"service's policy (mean batch {result['mean_batch_items']:.1f}), best of 3 alternating runs, load average "
             f"{load:.2f} before. The bundle's graph: {bundle.manifest.graph or 'made before it was recorded (dynamo)'}.", "",
             "| graph | items/s |", "|---|---:|",
             f"| bundle (MiniLM + atom head, `{runtime.model_file}`) | {best['bundle']:.0f} |",
             f"| plain MiniLM (the peers' `model.onnx`) | {best['plain']:.0f} |",
             *([f"| bundle's int8 copy (what the service runs on a CPU) | {best['bundle int8']:.0f} |"]
               if "bundle int8" in best else []), "",
             f"bundle / plain = {result['bundle_over_plain']:.2f}", ""]
    (args.out / "graph_cost.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
