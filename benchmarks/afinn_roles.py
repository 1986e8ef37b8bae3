"""Roles measured against a lexicon nobody here wrote: AFINN words through each bundle's encoder.

    python benchmarks/afinn_roles.py --bundle atom=bundles/tweets [--bundle baseline=PATH ...]
        [--out benchmarks/results/afinn_roles] [--language en] [--threads N]

For every AFINN word (AFINN-165 by default, shipped inside the `afinn` package: nothing is
downloaded) that is exactly one component of a bundle's tokenizer, the bundle's fp32
`encoder.onnx` is run on the word alone ([CLS] word [SEP]); the ROC AUC with which each role's
probability (electron, proton, neutron) and the atom's charge separate positive (score > 0) from
negative (score < 0) words is reported per bundle, with the best role's max(AUC, 1 - AUC) and the
side it points to (training/lexicon.py). Target (issue 17): the atom bundle's best role AUC >= 0.85.
Writes <out>.json and <out>.md and prints the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import describe, machine  # noqa: E402

ROLES = ("electron", "proton", "neutron")
TARGET = 0.85


def bundle_arg(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep:  # a bare path is named after its folder
        return Path(text).name, Path(text)
    if not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, Path(path)


def markdown(results: dict) -> str:
    m, lexicon = results["machine"], results["lexicon"]
    lines = [
        "# Roles against the AFINN lexicon", "",
        f"`{results['command']}` on {describe(m)}; {results['seconds']:.0f} s.", "",
        f"Lexicon: `{lexicon['name']}` ({lexicon['words']} entries, scores -5..+5) from the package {lexicon['package']}. "
        "Each bundle's "
        "fp32 `encoder.onnx` runs on every lexicon word that its tokenizer keeps as one component, alone "
        "([CLS] word [SEP]); words scored 0 are left out. AUC: the probability that a random positive word "
        "(score > 0) gets a higher value than a random negative one (ties count one half); 0.5 = no "
        "separation, below 0.5 = higher on negative words. Best role: the largest max(AUC, 1 - AUC) over "
        f"the three roles, and the side on which that role is the likelier. Target (issue 17): atom >= {TARGET}.", "",
        "| bundle | lambda | words (+ / -) | electron | proton | neutron | charge | best role |",
        "|---|---:|---|---:|---:|---:|---:|---|",
    ]
    for row in results["bundles"]:
        auc, best = row["auc"], row["best_role"]
        lines.append(
            f"| {row['name']} | {row['bundle']['weight']:g} | {row['words']} ({row['positives']} / {row['negatives']}) | "
            + " | ".join(f"{auc[k]:.3f}" for k in (*ROLES, "charge"))
            + f" | {best['role']} {best['auc']:.3f} (on {best['direction']} words) |"
        )
    lines += ["", "Mean value on positive / negative words:", "",
              "| bundle | electron | proton | neutron | charge |", "|---|---:|---:|---:|---:|"]
    for row in results["bundles"]:
        pos, neg = row["mean_on_positive"], row["mean_on_negative"]
        lines.append(f"| {row['name']} | " + " | ".join(f"{pos[k]:.3f} / {neg[k]:.3f}" for k in (*ROLES, "charge")) + " |")
    lines += ["", "Bundles: " + ", ".join(
        f"`{row['name']}` = `{row['bundle']['path']}` ({row['bundle']['name']} {row['bundle']['version']}, "
        f"backbone {row['bundle']['backbone'] or 'none'})" for row in results["bundles"]) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=bundle_arg, action="append", required=True, metavar="NAME=PATH")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "afinn_roles",
                        help="writes OUT.json and OUT.md")
    parser.add_argument("--language", default="en", help="AFINN list: en (AFINN-165), en-111, en-96, da")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    names = [name for name, _ in args.bundle]
    if len(set(names)) != len(names):
        parser.error(f"bundle names must differ: {names}")

    from training.lexicon import evaluate_bundle

    started = time.perf_counter()
    results: dict = {
        "command": "python benchmarks/afinn_roles.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine("CPUExecutionProvider"),
        "target_best_role_auc": TARGET,
        "bundles": [],
    }
    for name, path in args.bundle:
        result = evaluate_bundle(path, language=args.language, threads=args.threads)
        lexicon = result.pop("lexicon")
        # the lexicon is the same for every bundle; how many of its words are one piece is not
        results["lexicon"] = {key: lexicon[key] for key in ("name", "package", "words")}
        results["bundles"].append({"name": name, "single_piece": lexicon["single_piece"], **result})
    results["seconds"] = time.perf_counter() - started
    text = markdown(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
