"""Which int8 scheme the bundle ships (issue 22), chosen on the validation split.

    python benchmarks/int8_schemes.py [--run runs/tweets] [--items 1000]

For the default run's model (MiniLM + atom head), each candidate copy against fp32:
- batch invariance: the largest change of an embedding over 256 validation items, each alone
  against inside batches of 16 mixed-length items (and reversed), and the role changes it causes;
- cosine of the embeddings to fp32, and the classifier's accuracy on the copy's outputs;
- items/s on the validation items as the service runs them: rounds of 32 in arrival order, cut
  into batches of similar length (padding bound 0.1, the CPU default), ONNX Runtime with one
  thread per core and spinning off; "per input" runs each item alone.

Candidates: dynamic int8 (activation scales per call: the scheme before), served batched or one
input per call; static int8 with every weight MatMul quantized, or with those after GELU kept
fp32 (the shipped scheme), served batched or one input per call. Results: benchmarks/results/int8_schemes.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"


def service_batches(split, count: int, round_items: int = 32, padding: float = 0.1) -> list[np.ndarray]:
    """Row batches as the service's batcher cuts them from rounds of `round_items` arrivals."""
    from service.batcher import cut_batches

    lengths = split.mask.sum(1)
    batches = []
    for start in range(0, count, round_items):
        entries = [SimpleNamespace(row=row, length=int(lengths[row])) for row in range(start, min(start + round_items, count))]
        for batch in cut_batches(entries, round_items, 8192, padding):
            batches.append(np.array([entry.row for entry in batch]))
    return batches


def items_per_second(path: Path, split, names, batches: list[np.ndarray], seconds: float) -> float:
    from training.precision import model_feeds

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as the service runs it
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = [model_feeds(names, split, rows) for rows in batches]
    session.run(None, feeds[0])
    items, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for feed, rows in zip(feeds, batches):
            session.run(None, feed)
            items += len(rows)
    return items / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "tweets")
    parser.add_argument("--items", type=int, default=1000, help="validation items measured")
    parser.add_argument("--invariance-items", type=int, default=256, help="validation items alone and in batches")
    parser.add_argument("--seconds", type=float, default=10.0, help="timing per candidate")
    parser.add_argument("--out", type=Path, default=RESULTS / "int8_schemes")
    args = parser.parse_args(argv)

    from training.checkpoint import load_model, load_run_dataset
    from training.export import export_onnx, input_names, optimise, parity_batches
    from training.precision import batch_invariance, measure_precision, write_int8, write_int8_dynamic

    model = load_model(args.run).eval()
    data = load_run_dataset(args.run)
    names = input_names(model.config.modality)
    validation = data.validation
    work = Path(tempfile.mkdtemp(prefix="int8-schemes-"))
    fp32 = work / "encoder.onnx"
    export_onnx(model, parity_batches(data.train, model.config.modality, model.config.max_components)["mixed lengths with padding"],
                work / "raw.onnx")
    optimise(work / "raw.onnx", fp32)
    write_int8_dynamic(fp32, work / "dynamic.onnx")
    write_int8(fp32, work / "static.onnx", data.train, names)
    write_int8(fp32, work / "static-all.onnx", data.train, names, gelu_inputs_fp32=False)

    count = min(args.items, len(validation.labels))
    batches = service_batches(validation, count)
    singles = [np.array([row]) for row in range(count)]
    candidates = [
        ("fp32", fp32, batches),
        ("int8 dynamic, batched (before)", work / "dynamic.onnx", batches),
        ("int8 dynamic, one input per call", work / "dynamic.onnx", singles),
        ("int8 static, every MatMul", work / "static-all.onnx", batches),
        ("int8 static, MatMuls after GELU fp32, batched", work / "static.onnx", batches),
        ("int8 static, MatMuls after GELU fp32, one input per call", work / "static.onnx", singles),
    ]
    rows = []
    load = os.getloadavg()
    for name, path, plan in candidates:
        per_input = plan is singles
        quality = measure_precision(model, fp32, path, validation, names, limit=count, batch_size=1 if per_input else 64)
        invariance = {"embedding": 0.0, "role_changes": 0.0} if per_input else batch_invariance(path, validation, names, items=args.invariance_items)
        speed = items_per_second(path, validation, names, plan, args.seconds)
        rows.append({"candidate": name, "file_mb": path.stat().st_size / 2**20, "items_per_s": speed,
                     "batch_max_abs_diff": invariance["embedding"], "batch_role_changes": invariance["role_changes"],
                     **{k: quality[k] for k in ("cosine_mean", "cosine_min", "accuracy_fp32", "accuracy")}})
        print(json.dumps(rows[-1]))
    result = {"run": str(args.run), "validation_items": count, "batches": len(batches), "seconds": args.seconds,
              "load_average_before": load, "load_average_after": os.getloadavg(), "cpus": os.cpu_count(), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    fp32_speed = rows[0]["items_per_s"]
    lines = [
        "# int8 schemes, chosen on the validation split",
        "",
        f"`python benchmarks/int8_schemes.py` on `{args.run}` (MiniLM + atom head), {count} validation items in "
        f"{len(batches)} batches as the service cuts rounds of 32; {os.cpu_count()} cores, load average "
        f"{load[0]:.2f} before and {result['load_average_after'][0]:.2f} after. Batch change: the largest |difference| of an "
        f"embedding over {args.invariance_items} validation items, each alone against inside batches of 16 mixed-length "
        "items (and reversed); the per-input row "
        "is invariant by construction and its cosine and accuracy are measured one input per call.",
        "",
        "| candidate | batch change | role changes | cosine to fp32 (mean / min) | accuracy (fp32) | items/s | x fp32 | MB |",
        "|---|---:|---:|---|---|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(f"| {row['candidate']} | {row['batch_max_abs_diff']:.1e} | {row['batch_role_changes']:.0f} | "
                     f"{row['cosine_mean']:.4f} / {row['cosine_min']:.4f} | {row['accuracy']:.3f} ({row['accuracy_fp32']:.3f}) | "
                     f"{row['items_per_s']:.0f} | {row['items_per_s'] / fp32_speed:.2f} | {row['file_mb']:.0f} |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
