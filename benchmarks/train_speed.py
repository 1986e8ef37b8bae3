"""Training-step cost of the potential term, measured side by side in one process.

    python benchmarks/train_speed.py [--datasets synthetic,digits,mnist5k,tweets] [--rounds 5]

For each dataset, the baseline (atom architecture, lambda = 0: the atom term is not computed)
and the atom model take turns: blocks of optimizer steps on the same batches, alternating for
several rounds, so load on the machine hits both alike. Reports the median seconds per step of
each and their ratio. Writes benchmarks/results/train_speed.json and .md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import describe, machine  # noqa: E402
from model import AtomModel, atom_loss  # noqa: E402
from training.data import load_dataset  # noqa: E402
from training.train import TrainOptions, build_config, split_tensors, trim  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BATCH = {"synthetic": 64, "digits": 64, "mnist5k": 64, "tweets": 128}  # as in the quality benchmark


def step_seconds(model, optimizer, batches, config) -> list[float]:
    times = []
    for x, m, y in batches:
        start = time.perf_counter()
        losses = atom_loss(model(x, m), y, m, config)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return times


def measure(dataset: str, rounds: int, steps: int) -> dict:
    data = load_dataset(dataset)
    inputs, mask, labels = split_tensors(data.train, data.modality)
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(steps):
        index = torch.randperm(len(labels), generator=generator)[: BATCH[dataset]]
        x, m = trim(inputs[index], mask[index])
        batches.append((x, m, labels[index]))
    runners = {}
    for name, weight in (("baseline", 0.0), ("atom", None)):
        torch.manual_seed(0)
        config = build_config(TrainOptions(dataset=dataset, potential_weight=weight), data)
        model = AtomModel(config).train()
        runners[name] = (model, torch.optim.AdamW(model.parameters(), lr=1e-3), config)
    seconds = {name: [] for name in runners}
    for name, (model, optimizer, config) in runners.items():
        step_seconds(model, optimizer, batches[:3], config)  # warm-up
    for _ in range(rounds):
        for name, (model, optimizer, config) in runners.items():
            seconds[name] += step_seconds(model, optimizer, batches, config)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    return {
        "dataset": dataset,
        "batch_size": BATCH[dataset],
        "steps_measured_each": len(seconds["atom"]),
        "baseline_seconds_per_step": median["baseline"],
        "atom_seconds_per_step": median["atom"],
        "atom_over_baseline": median["atom"] / median["baseline"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="synthetic,digits,mnist5k,tweets")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="steps per block")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    records = [measure(dataset, args.rounds, args.steps) for dataset in args.datasets.split(",")]
    lines = [
        "# Training-step cost of the potential term",
        "",
        f"`python benchmarks/train_speed.py` on {describe(machine(), load=False)}, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}. Median seconds per optimizer step, "
        "baseline and atom alternating in blocks on the same batches.",
        "",
        "| dataset | batch | baseline s/step | atom s/step | atom / baseline |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in records:
        lines.append(f"| {r['dataset']} | {r['batch_size']} | {r['baseline_seconds_per_step']:.4f} | "
                     f"{r['atom_seconds_per_step']:.4f} | {r['atom_over_baseline']:.2f}x |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "train_speed.json").write_text(json.dumps(records, indent=2) + "\n")
    (args.out / "train_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
