"""Quality benchmark: plain vs baseline (lambda = 0) vs atom, same encoder, budget and seeds.

    python benchmarks/quality.py [--datasets digits,tweets] [--seeds 3] [--quick]

Writes benchmarks/results/quality.json (one record per dataset, method and seed, plus the
scikit-learn references) and benchmarks/results/quality.md (mean +- std, role usage, targets,
training-step overhead of the potential term). Trains on the CPU; see the README for how long.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.checkpoint import load_json  # noqa: E402
from training.data import load_dataset  # noqa: E402
from training.evaluate import evaluate_run  # noqa: E402
from training.train import TrainOptions, train  # noqa: E402

log = logging.getLogger("bench.quality")
RESULTS = Path(__file__).resolve().parent / "results"
METHODS = {
    "plain": {"head": "plain", "potential_weight": 0.0},
    "baseline": {"head": "atom", "potential_weight": 0.0},
    "atom": {"head": "atom", "potential_weight": None},  # None = the AtomConfig default lambda
}
# The same budget for every method of a dataset; sized so the whole benchmark fits a CPU hour.
BUDGET = {
    "synthetic": {"epochs": 8, "batch_size": 64, "model_overrides": {}},
    "digits": {"epochs": 30, "batch_size": 64, "model_overrides": {}},
    "mnist5k": {"epochs": 15, "batch_size": 64, "model_overrides": {}},
    "tweets": {"epochs": 3, "batch_size": 128, "model_overrides": {}},
}
METRICS = ("test_accuracy", "knn_accuracy", "silhouette", "uniformity", "role_recovery")


def reference_records(data) -> list[dict]:
    """Outside references on the same splits: logistic regression and (numeric) RBF SVC."""
    records = []
    if data.modality == "text":
        vectoriser = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
        train_x = vectoriser.fit_transform(data.train.texts)
        test_x = vectoriser.transform(data.test.texts)
        models = {"logreg": LogisticRegression(max_iter=2000, C=4.0)}
    else:
        train_x, test_x = data.train.features * data.input_scale, data.test.features * data.input_scale
        models = {"logreg": LogisticRegression(max_iter=2000), "svc": SVC(kernel="rbf", C=10.0)}
    for method, model in models.items():
        start = time.perf_counter()
        model.fit(train_x, data.train.labels)
        accuracy = float((model.predict(test_x) == data.test.labels).mean())
        records.append(blank_record(data.name, method, 0) | {"test_accuracy": accuracy, "train_seconds": time.perf_counter() - start})
    return records


def blank_record(dataset: str, method: str, seed: int) -> dict:
    return {"dataset": dataset, "method": method, "seed": seed, **{m: None for m in METRICS}, "train_seconds": None}


def run_one(data, dataset: str, method: str, seed: int, runs: Path, epochs_scale: float) -> dict:
    budget = BUDGET[dataset]
    settings = METHODS[method]
    run_dir = runs / dataset / method / f"seed{seed}"
    options = TrainOptions(
        dataset=dataset, out=run_dir, epochs=max(1, round(budget["epochs"] * epochs_scale)), seed=seed,
        batch_size=budget["batch_size"],
        head=settings["head"], potential_weight=settings["potential_weight"],
        model_overrides=budget["model_overrides"], progress=False,
    )
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a fresh run, never a resumed one
    train(options, data=data)
    result = evaluate_run(run_dir, data=data)
    epochs = [json.loads(line) for line in open(run_dir / "metrics.jsonl") if '"epoch"' in line]
    epochs = [e for e in epochs if e["kind"] == "epoch"]
    record = blank_record(data.name, method, seed)
    record.update({m: result.get(m) for m in METRICS})
    record["train_seconds"] = epochs[-1]["train_seconds"]
    record["steps"] = epochs[-1]["step"]
    record["seconds_per_step"] = record["train_seconds"] / max(record["steps"], 1)
    record["role_usage"] = result.get("role_usage")
    record["nn_overlap_fraction"] = result.get("nn_overlap_fraction")
    record["best_val_accuracy"] = load_json(run_dir / "state.json")["best_val_accuracy"]
    return record


def summarise(records: list[dict]) -> str:
    lines = ["# Quality benchmark", "", f"Machine: {platform.processor() or platform.machine()}, "
             f"Python {platform.python_version()}. Regenerate with `make bench-quality`.", ""]
    datasets = list(dict.fromkeys(r["dataset"] for r in records))
    methods = list(dict.fromkeys(r["method"] for r in records))
    lines += ["| dataset | method | seeds | test accuracy | kNN accuracy | silhouette | uniformity | role recovery | s/step |",
              "|---|---|---|---|---|---|---|---|---|"]
    verdicts = []
    for dataset in datasets:
        stats = {}
        for method in methods:
            rows = [r for r in records if r["dataset"] == dataset and r["method"] == method]
            if not rows:
                continue
            cells = []
            for metric in (*METRICS, "seconds_per_step"):
                values = [r[metric] for r in rows if r.get(metric) is not None]
                stats[(method, metric)] = (np.mean(values), np.std(values)) if values else None
                cells.append(f"{np.mean(values):.3f} ± {np.std(values):.3f}" if values else "–")
            lines.append(f"| {dataset} | {method} | {len(rows)} | " + " | ".join(cells) + " |")
        if all(stats.get((m, "test_accuracy")) for m in ("plain", "baseline", "atom")):
            best_plain = max(("plain", "baseline"), key=lambda m: stats[(m, "test_accuracy")][0])
            atom_mean, atom_std = stats[("atom", "test_accuracy")]
            ref_mean, ref_std = stats[(best_plain, "test_accuracy")]
            spread = max(atom_std, ref_std)
            verdict = "better" if atom_mean - ref_mean > spread else "worse" if ref_mean - atom_mean > spread else "within one std"
            verdicts.append(f"- {dataset}: atom {atom_mean:.4f} vs best plain variant ({best_plain}) {ref_mean:.4f}, "
                            f"delta {atom_mean - ref_mean:+.4f}, larger std {spread:.4f}: **{verdict}**")
    lines += ["", "s/step is each run's own training time per step, timed whatever else the 2 cores were doing, so",
              "it is noisy. The potential's cost is measured side by side in `train_speed.md` (below).",
              "", "## Atom vs the better of plain and baseline", "", *verdicts, "",
              "## Role usage (atom, test split; electron, proton, neutron)", ""]
    for dataset in datasets:
        usage = [r["role_usage"] for r in records if r["dataset"] == dataset and r["method"] == "atom" and r.get("role_usage")]
        if usage:
            mean = np.mean(usage, axis=0)
            lines.append(f"- {dataset}: " + ", ".join(f"{name} {value:.2f}" for name, value in zip(("electron", "proton", "neutron"), mean)))
    speed = RESULTS / "train_speed.md"
    if speed.exists():  # written by benchmarks/train_speed.py
        lines += ["", "## Training-step cost of the potential term", "", *speed.read_text().splitlines()[2:]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="synthetic,digits,mnist5k,tweets")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a tenth of the epochs (smoke test, not results)")
    parser.add_argument("--runs", type=Path, default=Path("runs/bench"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--summarise-only", action="store_true", help="rewrite quality.md from quality.json")
    args = parser.parse_args(argv)
    if args.summarise_only:
        records = json.loads((args.out / "quality.json").read_text())
        previous = (args.out / "quality.md").read_text() if (args.out / "quality.md").exists() else ""
        wall = [line for line in previous.splitlines() if line.startswith("Total wall time")]
        (args.out / "quality.md").write_text(summarise(records) + ("\n" + wall[0] + "\n" if wall else ""))
        return 0
    logging.basicConfig(level=logging.WARNING)
    datasets = args.datasets.split(",")
    records: list[dict] = []
    started = time.perf_counter()
    jobs = [(d, m, s) for d in datasets for s in range(args.seeds) for m in METHODS]
    bar = tqdm(total=len(jobs), desc="quality")
    for dataset in datasets:
        data = load_dataset(dataset)
        records += reference_records(data)
        for seed in range(args.seeds):
            for method in METHODS:  # methods interleaved per seed: timing drift hits all alike
                bar.set_postfix_str(f"{dataset} {method} seed {seed}")
                records.append(run_one(data, dataset, method, seed, args.runs, 0.1 if args.quick else 1.0))
                bar.update(1)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "quality.json").write_text(json.dumps(records, indent=2) + "\n")
    bar.close()
    summary = summarise(records) + f"\nTotal wall time: {time.perf_counter() - started:.0f} s.\n"
    (args.out / "quality.md").write_text(summary)
    print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
