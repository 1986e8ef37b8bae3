"""The Markdown summary of a quality suite's records (benchmarks/quality.py writes the records)."""

from __future__ import annotations

from typing import Callable

import numpy as np

METHOD_ORDER = ("plain", "baseline", "atom")


def mean_std(values: list[float]) -> tuple[float, float] | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def cell(stat: tuple[float, float] | None, digits: int = 3) -> str:
    return "–" if stat is None else f"{stat[0]:.{digits}f} ± {stat[1]:.{digits}f}"


def final_rows(records: list[dict], dataset: str, method: str, best: dict | None) -> list[dict]:
    """The chosen configuration's runs: its seed-0 sweep run plus the final seeds."""
    if best is None:
        return []
    return [r for r in records if r["dataset"] == dataset and r["method"] == method and r["config"] == best["config"]
            and r["phase"] in ("sweep", "final")]


def summarise(records: list[dict], suite: str, machine: str, chosen: Callable[[str, str], dict | None]) -> str:
    datasets = list(dict.fromkeys(r["dataset"] for r in records))
    command = {"scratch": "python benchmarks/quality.py --suite scratch --workers 2",
               "backbone-frozen": "python benchmarks/quality.py --suite backbone --train-layers 0",
               "backbone-finetuned": "bash benchmarks/device_quality.sh"}.get(suite, suite)
    if suite.startswith("backbone-top"):
        command = f"python benchmarks/quality.py --suite backbone --train-layers {suite.removeprefix('backbone-top')} --workers 2"
    target = {"scratch": "make bench-quality", "backbone-frozen": "make bench-quality-backbone",
              "backbone-finetuned": "a lent GPU machine"}.get(suite, "make bench-quality-tuned")
    lines = [f"# Quality benchmark: {suite}", "",
             f"Machine: {machine}. Regenerate with `{command}` ({target}).",
             "Each method tried the same number of configurations with seed 0; the one with the best validation",
             "accuracy was kept and trained again with seeds 1 and 2 (the `seeds` column says how many ran). Test figures below are of those runs only;",
             "spreads are sample standard deviations (ddof = 1).", "",
             "## Test results of the chosen configurations", "",
             "| dataset | method | chosen on validation | seeds | validation | test accuracy | kNN accuracy | silhouette | uniformity | role recovery |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    verdicts, radius_lines = [], []
    for dataset in datasets:
        stats, seeds = {}, {}
        for method in METHOD_ORDER:
            best = chosen(dataset, method)
            rows = final_rows(records, dataset, method, best)
            if not rows:
                continue
            stats[method] = mean_std([r["test_accuracy"] for r in rows])
            seeds[method] = len(rows)
            metrics = [cell(mean_std([r.get(m) for r in rows])) for m in
                       ("best_val_accuracy", "test_accuracy", "knn_accuracy", "silhouette", "uniformity", "role_recovery")]
            lines.append(f"| {dataset} | {method} | {best['config']} | {len(rows)} | " + " | ".join(metrics) + " |")
            if method in ("baseline", "atom") and rows[0].get("radius_cv") is not None:
                by_class = np.mean([r["radius_by_class"] for r in rows if r.get("radius_by_class")], axis=0)
                radius_lines.append(
                    f"| {dataset} | {method} | {cell(mean_std([r['radius_mean'] for r in rows]), 4)} | "
                    f"{cell(mean_std([r['radius_cv'] for r in rows]))} | {cell(mean_std([r['radius_length_spearman'] for r in rows]))} | "
                    f"{cell(mean_std([r['radius_class_eta2'] for r in rows]))} | " + ", ".join(f"{v:.4f}" for v in by_class) + " |")
        if all(stats.get(m) for m in METHOD_ORDER):
            rival = max(("plain", "baseline"), key=lambda m: stats[m][0])
            (atom_mean, atom_std), (ref_mean, ref_std) = stats["atom"], stats[rival]
            spread = max(atom_std, ref_std)
            verdict = "better" if atom_mean - ref_mean > spread else "worse" if ref_mean - atom_mean > spread else "within one std"
            if min(seeds[m] for m in METHOD_ORDER) < 2:  # no spread to judge a difference by
                verdict = "one seed only (the other seeds not run): no verdict"
            verdicts.append(f"- {dataset}: atom {atom_mean:.4f} vs {rival} {ref_mean:.4f}: delta {atom_mean - ref_mean:+.4f}, "
                            f"larger std {spread:.4f}: **{verdict}**")
    references = [r for r in records if r["phase"] == "reference"]
    lines += ["", "## Outside references (same splits; C chosen on validation)", "",
              "| dataset | reference | chosen | validation | test accuracy |", "|---|---|---|---|---|"]
    lines += [f"| {r['dataset']} | {r['method']} | {r['config']} | {r['best_val_accuracy']:.3f} | {r['test_accuracy']:.3f} |" for r in references]
    lines += ["", "## Atom against the better of plain and baseline (test accuracy)", "", *verdicts]
    lines += ["", "## Radius (bank = training split of each run)", "",
              "CV: coefficient of variation of the bank radii. Spearman: rank correlation of radius with the",
              "number of components. eta²: share of the radius variance explained by the class.", "",
              "| dataset | method | mean radius | CV | Spearman with length | eta² class | mean radius by class |",
              "|---|---|---|---|---|---|---|", *radius_lines]
    lines += ["", "## Sweeps (seed 0; validation accuracy of the best epoch; the chosen one in bold)", "",
              "Uniformity and the role shares (electron / proton / neutron) describe each run's test atoms; the",
              "choice reads the validation accuracy only.", "",
              "| dataset | method | configuration | settings | validation | best epoch | uniformity | roles e / p / n | s/step |",
              "|---|---|---|---|---|---|---|---|---|"]
    for dataset in datasets:
        for method in METHOD_ORDER:
            best = chosen(dataset, method)
            for r in [r for r in records if r["phase"] == "sweep" and r["dataset"] == dataset and r["method"] == method]:
                mark = "**" if best and r["config"] == best["config"] else ""
                usage = " / ".join(f"{u:.2f}" for u in r["role_usage"]) if r.get("role_usage") else "–"
                uniform = f"{r['uniformity']:.2f}" if r.get("uniformity") is not None else "–"
                lines.append(f"| {dataset} | {method} | {mark}{r['config']}{mark} | `{r['settings']}` | "
                             f"{mark}{r['best_val_accuracy']:.4f}{mark} | {r['best_epoch']} | {uniform} | {usage} | "
                             f"{r['seconds_per_step']:.3f} |")
    modes = [r for r in records if r["phase"] == "mode"]
    if modes:
        lines += ["", "## Backbone training mode (atom, chosen configuration, seed 0, validation)", "",
                  "| backbone layers trained | validation | s/step on this machine |", "|---|---|---|"]
        for dataset in datasets:
            best = chosen(dataset, "atom")
            full = [r for r in records if best and r.get("key") == best["key"]]
            for r in full + [m for m in modes if m["dataset"] == dataset]:
                layers = r["settings"].get("backbone_train_layers", -1)
                label = {-1: "all (full fine-tune)", 0: "none (frozen)"}.get(layers, f"top {layers}")
                lines.append(f"| {label} | {r['best_val_accuracy']:.4f} | {r['seconds_per_step']:.3f} |")
    return "\n".join(lines) + "\n"
