"""One prepared check of training on a CUDA GPU (run on a lent GPU machine; nothing depends on it).

    python benchmarks/gpu_check.py --out DIR

For `synthetic` and `digits`: trains the baseline (lambda = 0) and the atom model on cuda with
the same budget, records steps/s of each (the potential's overhead as a ratio), checks the
losses are finite, evaluates on the CPU and exports the atom run to a verified ONNX bundle.
Writes DIR/gpu_check.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("gpu_check"))
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    report: dict = {"torch": torch.__version__, "cuda": torch.cuda.is_available(), "python": platform.python_version()}
    if torch.cuda.is_available():
        report["gpu"] = torch.cuda.get_device_name(0)
    from training.evaluate import evaluate_run
    from training.export import export_bundle
    from training.train import TrainOptions, train

    for dataset in ("synthetic", "digits"):
        for method, weight in (("baseline", 0.0), ("atom", None)):
            key = f"{dataset}/{method}"
            run_dir = args.out / "runs" / dataset / method
            try:
                options = TrainOptions(dataset=dataset, out=run_dir, epochs=args.epochs, device="cuda",
                                       potential_weight=weight, progress=False, batch_size=64)
                start = time.perf_counter()
                train(options)
                wall = time.perf_counter() - start
                epochs = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
                steps = [r for r in epochs if r["kind"] == "step"]
                last = [r for r in epochs if r["kind"] == "epoch"][-1]
                result = evaluate_run(run_dir, device="cpu")
                report[key] = {
                    "wall_seconds": wall,
                    "steps": last["step"],
                    "steps_per_second": last["step"] / last["train_seconds"],
                    "all_losses_finite": all(abs(r["loss"]) < float("inf") for r in steps),
                    **{k: result[k] for k in ("test_accuracy", "knn_accuracy", "role_recovery", "role_usage")},
                }
                if method == "atom":
                    export_bundle(run_dir, args.out / "bundles" / dataset, report=False)
                    report[key]["exported"] = True
            except Exception:  # keep going: the report says what failed
                report[key] = {"error": traceback.format_exc()[-1500:]}
            print(key, json.dumps(report[key])[:400], flush=True)
        base, atom = report.get(f"{dataset}/baseline", {}), report.get(f"{dataset}/atom", {})
        if "steps_per_second" in base and "steps_per_second" in atom:
            report[f"{dataset}/time_per_step_atom_over_baseline"] = base["steps_per_second"] / atom["steps_per_second"]
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
