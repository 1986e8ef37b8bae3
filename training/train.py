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

from .backbone import (
    backbone_max_length,
    backbone_tokenizer,
    load_pretrained_weights,
    read_backbone_config,
    resolve_backbone,
    special_token_ids,
)
from .checkpoint import load_json, load_training_state, save_json, save_training_state, save_weights
from .data import Dataset, Split, load_dataset
from .datasets.builtin import TEXT_MAX_COMPONENTS

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
    # epochs between validations (the last epoch is always validated); a run of many short
    # epochs (a small label budget) spends most of its time validating otherwise
    eval_every: int = 1
    # Model: anything here overrides the AtomConfig default
    head: Literal["atom", "plain"] = "atom"
    # Pretrained text backbone: "minilm" or a local Hugging Face folder; None = from scratch
    backbone: str | None = None
    # the bundle's input limit on a backbone, [CLS]/[SEP] included: None = the backbone's own
    # (all-MiniLM-L6-v2: 256), whatever length the training texts are cut to (64 tokens)
    max_components: int | None = None
    backbone_train_layers: int = -1  # -1 full fine-tune, 0 frozen, k the top k layers
    backbone_lr: float = 5e-5  # the pretrained weights move slowly; the atom head uses `lr`
    backbone_adapter_layers: int = 0  # new Transformer blocks on top of the backbone
    potential: Literal["morse", "lj"] = "morse"
    potential_weight: float | None = None  # lambda; None = the AtomConfig default, 0 = baseline
    # lambda rises linearly from 0 over this many epochs (counted in steps; 1.0 = the first
    # epoch): the classifier finds its classes before the potential starts spacing them. 0 = off
    potential_warmup_epochs: float = 0.0
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


def build_config(options: TrainOptions, data: Dataset, backbone_path: Path | None = None) -> AtomConfig:
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
    if backbone_path is not None:
        hf = read_backbone_config(backbone_path)
        limit = backbone_max_length(backbone_path)
        if options.max_components is not None and not 0 < options.max_components <= hf["max_position_embeddings"]:
            raise ValueError(f"max_components={options.max_components}: backbone {options.backbone} takes 1 to "
                             f"{hf['max_position_embeddings']} positions")
        values.update(
            max_components=options.max_components or limit,
            backbone=options.backbone,
            backbone_config=hf,
            backbone_train_layers=options.backbone_train_layers,
            backbone_adapter_layers=options.backbone_adapter_layers,
            special_token_ids=special_token_ids(data.tokenizer),
            d_model=hf["hidden_size"],
            n_heads=hf["num_attention_heads"],  # for adapter blocks on top
            # the backbone's own width: the atomized embedding is as wide as the sentence
            # embedding a user would otherwise take from it
            embedding_dim=hf["hidden_size"],
            dropout=hf.get("hidden_dropout_prob", 0.1),
        )
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


def caches_states(model: AtomModel) -> bool:
    """A backbone with a frozen part (frozen, or only its top layers trained): that part's output
    is computed once per item and reused every epoch."""
    return getattr(model.encoder, "frozen_depth", None) is not None


@torch.no_grad()
def backbone_states(model: AtomModel, split: Split, device: torch.device, batch_size: int = 128,
                    desc: str | None = None) -> torch.Tensor:
    """(N, n, d) float16 on the CPU: the output of a backbone's frozen part for every item of a
    split, computed once so that every epoch after costs only the trained top layers and the head
    (fp16 halves the memory: 1.3 GB for the tweets training split with MiniLM; training reads
    them, the exported model recomputes)."""
    encoder = model.encoder.eval()
    inputs, mask, _ = split_tensors(split, "text")
    order = torch.argsort(mask.sum(1), stable=True)
    out = None
    for start in tqdm(range(0, len(inputs), batch_size), desc=desc or "backbone states", disable=desc is None, leave=False):
        index = order[start : start + batch_size]
        x, m = trim(inputs[index], mask[index])
        h = encoder.frozen_part(x.to(device), m.to(device)).to("cpu", torch.float16)
        if out is None:
            out = torch.zeros(len(inputs), inputs.shape[1], h.shape[-1], dtype=torch.float16)
        out[index, : h.shape[1]] = h
    return out


def split_states(model: AtomModel, data: Dataset, names: tuple[str, ...], device: torch.device,
                 states: dict | None, progress: bool) -> dict:
    """The states of the backbone's frozen part for the named splits, reusing those given; {}
    when nothing is frozen."""
    if not caches_states(model):
        return {}
    states = dict(states or {})
    for name in names:
        if name not in states:
            states[name] = backbone_states(model, data.splits()[name], device, desc=f"backbone states ({name})" if progress else None)
    return states


@torch.no_grad()
def predict(model: AtomModel, split: Split, modality: str, device: torch.device, batch_size: int = 256,
            states: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    """Embeddings, logits, composition and roles for a whole split (eval mode; roles padded to
    the split's length). Items run in batches of similar length, each cut to its longest item:
    padding changes no output, and a pretrained backbone then does a fraction of the work."""
    model.eval()
    inputs, mask, _ = split_tensors(split, modality)
    order = torch.argsort(mask.sum(1), stable=True)
    outputs: dict[str, np.ndarray] = {}
    for start in range(0, len(inputs), batch_size):
        index = order[start : start + batch_size]
        x, m = trim(inputs[index], mask[index])
        if states is None:
            out = model(x.to(device), m.to(device))
        else:
            out = model(x.to(device), m.to(device), states[index, : x.shape[1]].to(device))
        for key in ("embedding", "logits", "composition", "roles"):
            value = getattr(out, key).float().cpu().numpy()
            if key not in outputs:
                shape = (len(inputs), mask.shape[1], *value.shape[2:]) if key == "roles" else (len(inputs), *value.shape[1:])
                outputs[key] = np.zeros(shape, dtype=np.float32)
            if key == "roles":
                outputs[key][index.numpy(), : value.shape[1]] = value
            else:
                outputs[key][index.numpy()] = value
    return outputs


def lr_factor(step: int, total: int, options: TrainOptions) -> float:
    """Linear warm-up, cosine decay to 10%: the factor on each parameter group's base rate."""
    if step < options.warmup_steps:
        return (step + 1) / options.warmup_steps
    progress = min(1.0, (step - options.warmup_steps) / max(1, total - options.warmup_steps))
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


def potential_factor(step: int, steps_per_epoch: int, options: TrainOptions) -> float:
    """The factor on lambda at this step: step / warm-up steps, 1 after the warm-up (or without one)."""
    warmup = options.potential_warmup_epochs * steps_per_epoch
    return min(1.0, step / warmup) if warmup > 0 else 1.0


def parameter_groups(model: AtomModel, options: TrainOptions) -> list[dict]:
    """The backbone's pretrained weights at `backbone_lr`, everything else at `lr`; frozen
    weights are left out."""
    backbone, rest = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (backbone if name.startswith("encoder.model.") else rest).append(param)
    groups = [{"params": rest, "base_lr": options.lr}]
    if backbone:
        groups.append({"params": backbone, "base_lr": options.backbone_lr})
    return groups


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


def train(options: TrainOptions, data: Dataset | None = None, states: dict | None = None) -> Path:
    """Train one model; returns the run folder. Pass `data` to reuse an already loaded dataset
    and `states` ({split name: backbone_states(...)}) to reuse the states of a backbone's frozen part."""
    rank, world = distributed_context()
    device = resolve_device(options.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    torch.manual_seed(options.seed)
    np.random.seed(options.seed)
    backbone_path = resolve_backbone(options.backbone) if options.backbone else None
    if data is None:
        tokenizer = backbone_tokenizer(backbone_path, TEXT_MAX_COMPONENTS) if backbone_path else None
        data = load_dataset(options.dataset, split_seed=options.split_seed, limit=options.limit, tokenizer=tokenizer)
    config = build_config(options, data, backbone_path)
    out = options.out
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        if not options.resume:  # a fresh run into an old folder must not inherit its records
            for name in RUN_FILES:
                (out / name).unlink(missing_ok=True)
        write_run_info(options, data, config)

    model = AtomModel(config)
    if backbone_path is not None and not options.resume:
        load_pretrained_weights(model.encoder, backbone_path)
    model = model.to(device)
    optimizer = torch.optim.AdamW(parameter_groups(model, options), lr=options.lr, weight_decay=options.weight_decay)
    start_epoch, step, best = 0, 0, -1.0
    if options.resume and (out / "state.json").exists():
        state = load_json(out / "state.json")
        load_training_state(out / "last.safetensors", model, optimizer)
        start_epoch, step, best = state["epoch"], state["step"], state["best_val_accuracy"]
        log.info("resuming %s at epoch %d, step %d", out, start_epoch, step)
    # the baseline (lambda = 0) never uses the shell and element heads: DDP must not wait for them
    unused = config.head == "atom" and config.potential_weight == 0.0
    trainable = DistributedDataParallel(model, find_unused_parameters=unused) if world > 1 else model

    states = split_states(model, data, ("train", "validation"), device, states, options.progress and rank == 0)
    train_states = states.get("train")
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
                factor = lr_factor(step, total_steps, options)
                for group in optimizer.param_groups:
                    group["lr"] = group["base_lr"] * factor
                if train_states is None:
                    output = trainable(x, m)
                else:
                    output = trainable(x, m, train_states[index, : x.shape[1]].to(device))
                losses = atom_loss(output, y, m, config, potential_scale=potential_factor(step, steps_per_epoch, options))
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
            last = epoch == options.epochs - 1 or step >= total_steps
            if rank == 0 and ((epoch + 1) % max(1, options.eval_every) == 0 or last):
                best = end_of_epoch(model, data, config, device, optimizer, epoch, step, best, train_seconds, metrics_file,
                                    states.get("validation"))
            if world > 1:
                dist.barrier()
    finally:
        bar.close()
        if metrics_file:
            metrics_file.close()
    if rank == 0 and not (out / "best.safetensors").exists():
        save_weights(out / "best.safetensors", model)  # max_steps ended before an epoch closed
    return out


def end_of_epoch(model, data, config, device, optimizer, epoch, step, best, train_seconds, metrics_file, states=None) -> float:
    """Validate, keep the best weights, write the resume state; returns the best accuracy so far."""
    pred = predict(model, data.validation, config.modality, device, states=states)
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
