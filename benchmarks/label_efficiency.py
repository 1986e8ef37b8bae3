"""The label-efficiency curve on frozen all-MiniLM-L6-v2 states (issue 17, item 3).

    python benchmarks/label_efficiency.py [--budgets 100,300,1000,3000,10000] [--workers 2]

plain, baseline and atom heads and a logistic regression on the frozen sentence embedding, each
trained on a fixed seeded subset of the tweets training split (the same rows for every method
and seed; validation and test unchanged). At every budget each method tries the same number of
settings with seed 0 (plain and baseline: six head learning rates; atom: two learning rates x
three lambdas; logistic regression: four C), keeps the best on validation and trains it again with
seeds 1 and 2. The full training split is the frozen quality suite itself
(quality_backbone-frozen.jsonl: 16 settings per method), read from there.

A small budget gets smaller batches and more epochs so that every run takes about 400 steps
(at least 6 epochs, at most 100), validated at most 10 times (every ceil(epochs / 10) epochs and
at the last); the best validated epoch is kept, as everywhere. Budgets run one after the other,
each sweep then its final seeds, so an interrupted run leaves whole budgets behind.
Records: benchmarks/results/label_efficiency.jsonl (resumable); table and plot:
label_efficiency.md and label_efficiency.png.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import read_records  # noqa: E402
from quality import (  # noqa: E402
    RESULTS, chosen, frozen_sentence_embeddings, label_subset, load_data, run_jobs, sweep_of,
)
from quality_report import final_rows  # noqa: E402

METHODS = ("plain", "baseline", "atom")
# Six settings per method. The first run (four each: plain and baseline lr 1e-3..3e-2, atom lr
# {3e-3, 1e-2} x lambda {0.3, 1}) chose values at the edges: baseline lr 1e-3 at every budget,
# plain 3e-2 at 10,000, atom lr 3e-3 at four budgets, and atom never had the lambda that the
# frozen sweep chose on all labels (0.03); each grid was extended past its edge.
GRID = {
    "plain": {f"lr{lr:g}": {"lr": lr} for lr in (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)},
    "baseline": {f"lr{lr:g}": {"lr": lr} for lr in (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)},
    "atom": {f"lr{lr:g}-lambda{lam:g}": {"lr": lr, "potential_weight": lam} for lr in (1e-3, 3e-3) for lam in (0.03, 0.3, 1.0)},
}
LOGREG_C = (0.1, 1.0, 10.0, 100.0)
STEPS = 400
VALIDATIONS = 10  # validations per run at most: 50 short epochs would spend most of a run validating
SEEDS = 3


def schedule(labels: int, batch_size: int = 64) -> dict:
    """Batch size and epochs that give a budget about STEPS optimizer steps."""
    batch = min(batch_size, max(8, labels // 8))
    epochs = min(100, max(6, math.ceil(STEPS / max(1, labels // batch))))
    return {"batch_size": batch, "epochs": epochs, "eval_every": math.ceil(epochs / VALIDATIONS)}


def job(args, method: str, labels: int, name: str, settings: dict, seed: int, phase: str) -> dict:
    return {"suite": "labels", "dataset": "tweets", "method": method, "config": f"n{labels}-{name}",
            "settings": {**settings, **schedule(labels)}, "seed": seed, "phase": phase, "backbone": args.backbone,
            "device": "cpu", "workers": args.workers, "limit": None, "train_layers": 0, "epochs_scale": 1.0,
            "runs": str(args.runs), "keep_run": False, "train_labels": labels}


def best_of(records: list[dict], method: str, labels: int) -> dict | None:
    order = [f"n{labels}-{name}" for name in GRID[method]]
    rows = [r for r in records if r["phase"] == "sweep" and r["method"] == method and r["config"] in order]  # this grid
    return max(rows, key=lambda r: (r["best_val_accuracy"], -order.index(r["config"]))) if rows else None


def logreg_records(args, budgets: list[int], done: set[str]) -> list[dict]:
    """Logistic regression on the frozen mean-pooled, normalised embedding; C on validation."""
    from sklearn.linear_model import LogisticRegression

    data = load_data("tweets", args.backbone)
    train_x, val_x, test_x = frozen_sentence_embeddings("tweets", args.backbone, data, args.runs)
    records = []
    for labels in budgets:
        key = f"labels/tweets/logreg/n{labels}"
        if key in done:
            continue
        rows = label_subset(len(data.train.labels), labels)
        scored = []
        for c in LOGREG_C:
            model = LogisticRegression(C=c, max_iter=3000).fit(train_x[rows], data.train.labels[rows])
            scored.append((float((model.predict(val_x) == data.validation.labels).mean()), c, model))
        val, c, model = max(scored, key=lambda s: s[0])
        records.append({"suite": "labels", "dataset": "tweets", "method": "logreg", "config": f"n{labels}-C{c:g}",
                        "seed": 0, "phase": "final", "key": key, "train_labels": labels, "best_val_accuracy": val,
                        "test_accuracy": float((model.predict(test_x) == data.test.labels).mean())})
    return records


def full_split_rows(quality_path: Path) -> dict[str, list[float]]:
    """Test accuracies on all training labels, from the frozen quality suite: each method's chosen
    configuration (its seed-0 sweep run and the final seeds) and the logistic-regression reference."""
    records = read_records(quality_path)
    rows = {m: [r["test_accuracy"] for r in final_rows(records, "tweets", m, chosen(records, "tweets", m, sweep_of("backbone", 0, records, "tweets")))]
            for m in METHODS}
    rows["logreg"] = [r["test_accuracy"] for r in records if r["method"] == "frozen-backbone-logreg" and r["phase"] == "reference"]
    return rows


def summarise(records: list[dict], budgets: list[int], full_size: int, quality_path: Path, out: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table: dict[str, dict[int, list[float]]] = {m: {} for m in (*METHODS, "logreg")}
    chosen: dict[str, dict[int, str]] = {m: {} for m in table}
    best = {(m, n): best_of(records, m, n) for m in GRID for n in {r["train_labels"] for r in records}}
    for r in records:
        current = best.get((r["method"], r["train_labels"]))
        if r["phase"] == "final" and (current is None or r["config"] == current["config"]):  # not a stale choice's seeds
            table[r["method"]].setdefault(r["train_labels"], []).append(r["test_accuracy"])
            chosen[r["method"]][r["train_labels"]] = r["config"].split("-", 1)[1]
    full = full_split_rows(quality_path)
    for method, values in full.items():
        if values:
            table[method][full_size] = values
    sizes = [*sorted(budgets), full_size]

    def cell(values: list[float] | None) -> str:
        if not values:
            return "–"
        return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}" if len(values) > 1 else f"{values[0]:.3f}"

    lines = ["# Label efficiency: frozen MiniLM on tweets", "",
             "`python benchmarks/label_efficiency.py`; test accuracy, mean ± sample std over 3 seeds of the setting "
             "chosen on validation at each budget (logistic regression: deterministic, one run). The last column is "
             "the full training split, from quality_backbone-frozen.jsonl.", "",
             "| method | " + " | ".join(f"{n:,}" for n in sizes) + " |", "|---|" + "---:|" * len(sizes)]
    for method in table:
        lines.append(f"| {method} | " + " | ".join(cell(table[method].get(n)) for n in sizes) + " |")
    lines += ["", "Chosen on validation (seed 0):", ""]
    for method in table:
        lines.append(f"- {method}: " + ", ".join(f"{n:,}: {chosen[method][n]}" for n in sorted(budgets) if n in chosen[method]))
    lines += ["", "Atom against the better of plain and baseline, per budget (more than one sample std of the larger spread counts):", ""]
    for n in sizes:
        atom, others = table["atom"].get(n), [table[m].get(n) for m in ("plain", "baseline")]
        if not atom or not all(others) or len(atom) < 2:
            continue
        best = max(others, key=np.mean)
        delta, spread = np.mean(atom) - np.mean(best), max(np.std(atom, ddof=1), np.std(best, ddof=1))
        verdict = "better" if delta > spread else "worse" if delta < -spread else "within one std"
        lines.append(f"- {n:,} labels: atom {np.mean(atom):.3f}, best other {np.mean(best):.3f}: delta {delta:+.3f} (std {spread:.3f}): **{verdict}**")

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for method in table:
        xs = [n for n in sizes if table[method].get(n)]
        means = [np.mean(table[method][n]) for n in xs]
        errors = [np.std(table[method][n], ddof=1) if len(table[method][n]) > 1 else 0.0 for n in xs]
        axis.errorbar(xs, means, yerr=errors, marker="o", capsize=3, label=method)
    axis.set_xscale("log")
    axis.set_xlabel("training labels (tweets, frozen all-MiniLM-L6-v2)")
    axis.set_ylabel("test accuracy")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(out.with_suffix(".png"), dpi=120)
    lines += ["", f"![label efficiency]({out.with_suffix('.png').name})"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", default="100,300,1000,3000,10000")
    parser.add_argument("--backbone", default="minilm")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", type=Path, default=Path("runs/bench"))
    parser.add_argument("--out", type=Path, default=RESULTS / "label_efficiency")
    parser.add_argument("--summarise-only", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    budgets = [int(b) for b in args.budgets.split(",")]
    results = args.out.with_suffix(".jsonl")
    records = read_records(results)
    if not args.summarise_only:
        done = {r["key"] for r in records}
        for record in logreg_records(args, budgets, done):
            records.append(record)
            with open(results, "a") as f:
                f.write(json.dumps(record) + "\n")
        for n in budgets:
            sweep = [job(args, m, n, name, settings, 0, "sweep") for m in METHODS for name, settings in GRID[m].items()]
            run_jobs(sweep, results, args.workers, done)
            records = read_records(results)
            copies, finals = [], []
            for m in METHODS:
                best = best_of(records, m, n)
                if best is None:
                    continue
                name = best["config"].split("-", 1)[1]
                copies.append({**best, "phase": "final", "key": best["key"] + "-final"})  # seed 0: the sweep run itself
                finals += [job(args, m, n, name, GRID[m][name], seed, "final") for seed in range(1, SEEDS)]
            with open(results, "a") as f:
                for record in copies:
                    if record["key"] not in done:
                        f.write(json.dumps(record) + "\n")
            run_jobs(finals, results, args.workers, done)
    records = [{**r, "train_labels": int(r["config"][1:].split("-")[0])} for r in read_records(results)]
    full_size = len(load_data("tweets", args.backbone).train.labels)
    quality_path = RESULTS / "quality_backbone-frozen.jsonl"
    text = summarise(records, budgets, full_size, quality_path, args.out)
    args.out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
