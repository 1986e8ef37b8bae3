"""Training loop: AdamW, validation each epoch, best-on-validation checkpoint, resumable, DDP-ready.

Run under `torchrun --nproc_per_node N` and each process trains on its shard of every batch
window (DistributedDataParallel averages gradients; the potential is the energy of the local
batch). Rank 0 alone writes files.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from model import AtomConfig, AtomModel, atom_loss, role_usage

from .checkpoint import load_json, load_training_state, save_json, save_training_state, save_weights
from .data import Dataset, Split, load_dataset

log = logging.getLogger(__name__)
RUN_FILES = ("metrics.jsonl", "state.json", "best.safetensors", "last.safetensors", "evaluation.json")


@dataclass
class TrainOptions:
    dataset: str = "tweets"
    out: Path = Path("runs/tweets")
    epochs: int = 10
    max_steps: int | None = None  # stop early after this many optimizer steps (smoke runs)
    seed: int = 0
    split_seed: int = 0  # the splits stay fixed while the training seed varies
    limit: int | None = None  # subsample the dataset (tests, quick runs)
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    device: Literal["auto", "cpu", "cuda"] = "auto"
    resume: bool = False
    progress: bool = True
    log_every: int = 10  # steps between metrics.jsonl step records
    # Model: anything here overrides the AtomConfig default
    head: Literal["atom", "plain"] = "atom"
    potential: Literal["morse", "lj"] = "morse"
    potential_weight: float | None = None  # lambda; None = the AtomConfig default, 0 = baseline
    model_overrides: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        kind, sep, path = self.dataset.partition(":")
        if sep and kind in ("csv", "npz"):  # the run folder must find its data from anywhere
            self.dataset = f"{kind}:{Path(path).expanduser().resolve()}"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but torch sees no CUDA device")
    return torch.device(name)


def build_config(options: TrainOptions, data: Dataset) -> AtomConfig:
    values = dict(
        modality=data.modality,
        vocab_size=max(data.vocab_size, 2),
        component_dim=data.component_dim,
        max_components=data.max_components,
        num_classes=len(data.label_names),
        input_scale=data.input_scale,
        head=options.head,
        potential=options.potential,
    )
    if options.potential_weight is not None:
        values["potential_weight"] = options.potential_weight
    values.update(options.model_overrides)
    return AtomConfig(**values)


def split_tensors(split: Split, modality: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dtype = torch.long if modality == "text" else torch.float32
    return (
        torch.as_tensor(split.inputs, dtype=dtype),
        torch.as_tensor(split.mask, dtype=torch.bool),
        torch.as_tensor(split.labels, dtype=torch.long),
    )


def trim(inputs: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop padding columns that no item of this batch uses (padding changes no output)."""
    longest = max(int(mask.sum(1).max()), 1)
    return inputs[:, :longest], mask[:, :longest]


def batches(size: int, batch_size: int, generator: torch.Generator, rank: int, world: int) -> Iterator[torch.Tensor]:
    """Index batches for this rank: full windows of batch_size * world items, the rest dropped
    (a whole epoch is one window when the data is smaller than that)."""
    order = torch.randperm(size, generator=generator)
    window = batch_size * world
    for start in range(0, max(size - window, 0) + 1, window):
        yield order[start : start + window][rank::world]


@torch.no_grad()
def predict(model: AtomModel, split: Split, modality: str, device: torch.device, batch_size: int = 512) -> dict[str, np.ndarray]:
    """Embeddings, logits, composition and roles for a whole split (eval mode, padded to the split)."""
    model.eval()
    inputs, mask, _ = split_tensors(split, modality)
    outputs: dict[str, list[np.ndarray]] = {"embedding": [], "logits": [], "composition": [], "roles": []}
    for start in range(0, len(inputs), batch_size):
        out = model(inputs[start : start + batch_size].to(device), mask[start : start + batch_size].to(device))
        for key in outputs:
            outputs[key].append(getattr(out, key).float().cpu().numpy())
    return {key: np.concatenate(value) for key, value in outputs.items()}


def lr_at(step: int, total: int, options: TrainOptions) -> float:
    """Linear warm-up, cosine decay to 10%."""
    if step < options.warmup_steps:
        return options.lr * (step + 1) / options.warmup_steps
    progress = min(1.0, (step - options.warmup_steps) / max(1, total - options.warmup_steps))
    return options.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def distributed_context() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def write_run_info(options: TrainOptions, data: Dataset, config: AtomConfig) -> None:
    out = options.out
    save_json(out / "config.json", config.to_dict())
    info = {
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
        "dataset": {
            "name": data.name,
            "modality": data.modality,
            "label_names": data.label_names,
            "max_components": data.max_components,
            "component_dim": data.component_dim,
            "vocab_size": data.vocab_size,
            "input_scale": data.input_scale,
            "preprocess": data.preprocess,
            "sizes": {"train": len(data.train.labels), "validation": len(data.validation.labels), "test": len(data.test.labels)},
        },
    }
    save_json(out / "run.json", info)
    if data.tokenizer is not None:
        data.tokenizer.save(str(out / "tokenizer.json"))


def train(options: TrainOptions, data: Dataset | None = None) -> Path:
    """Train one model; returns the run folder. Pass `data` to reuse an already loaded dataset."""
    rank, world = distributed_context()
    device = resolve_device(options.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    torch.manual_seed(options.seed)
    np.random.seed(options.seed)
    data = data or load_dataset(options.dataset, split_seed=options.split_seed, limit=options.limit)
    config = build_config(options, data)
    out = options.out
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        if not options.resume:  # a fresh run into an old folder must not inherit its records
            for name in RUN_FILES:
                (out / name).unlink(missing_ok=True)
        write_run_info(options, data, config)

    model = AtomModel(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    start_epoch, step, best = 0, 0, -1.0
    if options.resume and (out / "state.json").exists():
        state = load_json(out / "state.json")
        load_training_state(out / "last.safetensors", model, optimizer)
        start_epoch, step, best = state["epoch"], state["step"], state["best_val_accuracy"]
        log.info("resuming %s at epoch %d, step %d", out, start_epoch, step)
    # the baseline (lambda = 0) never uses the shell and element heads: DDP must not wait for them
    unused = config.head == "atom" and config.potential_weight == 0.0
    trainable = DistributedDataParallel(model, find_unused_parameters=unused) if world > 1 else model

    inputs, mask, labels = split_tensors(data.train, config.modality)
    steps_per_epoch = max(1, len(labels) // (options.batch_size * world))
    total_steps = steps_per_epoch * options.epochs
    if options.max_steps is not None:
        total_steps = min(total_steps, options.max_steps)
    metrics_file = open(out / "metrics.jsonl", "a") if rank == 0 else None
    bar = tqdm(total=total_steps, initial=step, disable=not options.progress or rank != 0, desc=f"train {data.name}")
    train_seconds = 0.0
    try:
        for epoch in range(start_epoch, options.epochs):
            if step >= total_steps:
                break
            model.train()
            generator = torch.Generator().manual_seed(options.seed * 1000 + epoch)
            epoch_start = time.perf_counter()
            for index in batches(len(labels), options.batch_size, generator, rank, world):
                if step >= total_steps:
                    break
                x, m = trim(inputs[index], mask[index])
                x, m, y = x.to(device), m.to(device), labels[index].to(device)
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step, total_steps, options)
                output = trainable(x, m)
                losses = atom_loss(output, y, m, config)
                optimizer.zero_grad(set_to_none=True)
                losses["loss"].backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                step += 1
                bar.update(1)
                if metrics_file and step % options.log_every == 0:
                    record = {"kind": "step", "epoch": epoch, "step": step, "lr": optimizer.param_groups[0]["lr"]}
                    record.update({k: float(v.detach()) for k, v in losses.items()})
                    metrics_file.write(json_line(record))
                    bar.set_postfix(loss=f"{record['loss']:.3f}", task=f"{record['task']:.3f}")
            train_seconds += time.perf_counter() - epoch_start
            if rank == 0:
                best = end_of_epoch(model, data, config, device, optimizer, epoch, step, best, train_seconds, metrics_file)
            if world > 1:
                dist.barrier()
    finally:
        bar.close()
        if metrics_file:
            metrics_file.close()
    if rank == 0 and not (out / "best.safetensors").exists():
        save_weights(out / "best.safetensors", model)  # max_steps ended before an epoch closed
    return out


def end_of_epoch(model, data, config, device, optimizer, epoch, step, best, train_seconds, metrics_file) -> float:
    """Validate, keep the best weights, write the resume state; returns the best accuracy so far."""
    pred = predict(model, data.validation, config.modality, device)
    scores = {"val_accuracy": float((pred["logits"].argmax(1) == data.validation.labels).mean())}
    usage = role_usage(torch.as_tensor(pred["roles"]), torch.as_tensor(data.validation.mask)).tolist()
    record = {"kind": "epoch", "epoch": epoch, "step": step, "train_seconds": train_seconds, "role_usage": usage, **scores}
    metrics_file.write(json_line(record))
    metrics_file.flush()
    log.info("epoch %d step %d val_accuracy %.4f role usage %s", epoch, step, scores["val_accuracy"], usage)
    out = Path(metrics_file.name).parent
    if scores["val_accuracy"] > best:
        best = scores["val_accuracy"]
        save_weights(out / "best.safetensors", model)
    save_training_state(out / "last.safetensors", model, optimizer)
    save_json(out / "state.json", {"epoch": epoch + 1, "step": step, "best_val_accuracy": best})
    return best


def json_line(record: dict) -> str:
    return json.dumps(record) + "\n"
