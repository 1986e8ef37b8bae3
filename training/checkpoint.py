"""Run-folder files: weights as safetensors, config and state as JSON (no pickle anywhere).

    run_dir/config.json        AtomConfig (rebuilds the model from the folder alone)
    run_dir/run.json           what was trained on (dataset, seed, labels, preprocessing) + summary
    run_dir/best.safetensors   weights with the best validation accuracy
    run_dir/last.safetensors   weights + optimizer moments at the end of the last epoch (resume)
    run_dir/state.json         epoch, step and best score for resuming
    run_dir/metrics.jsonl      one JSON record per logged step and per epoch
    run_dir/tokenizer.json     text runs only
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from model import AtomConfig, AtomModel

OPTIMIZER_PREFIX = "optimizer."


def save_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)  # atomic: a crash never leaves half a file


def load_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}


def save_weights(path: Path, model: torch.nn.Module) -> None:
    save_file(_weights(model), str(path))


def save_training_state(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Weights plus AdamW moments, flattened to tensors so safetensors can hold them."""
    tensors = _weights(model)
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"{OPTIMIZER_PREFIX}{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    save_file(tensors, str(path))


def load_training_state(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    tensors = load_file(str(path))
    weights = {k: v for k, v in tensors.items() if not k.startswith(OPTIMIZER_PREFIX)}
    model.load_state_dict(weights)
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith(OPTIMIZER_PREFIX):
            index, name = key[len(OPTIMIZER_PREFIX):].split(".", 1)
            state.setdefault(int(index), {})[name] = value
    optimizer_state = optimizer.state_dict()
    optimizer_state["state"] = state
    optimizer.load_state_dict(optimizer_state)


def load_model(run_dir: Path, weights: str = "best.safetensors") -> AtomModel:
    """Rebuild a trained model from its run folder alone, in eval mode on the CPU."""
    run_dir = Path(run_dir)
    config = AtomConfig.from_dict(load_json(run_dir / "config.json"))
    model = AtomModel(config)
    model.load_state_dict(load_file(str(run_dir / weights)))
    return model.eval()


def load_run_dataset(run_dir: Path):
    """The dataset a run was trained on, with text re-encoded by the run's own tokenizer."""
    from tokenizers import Tokenizer

    from .data import encode_texts, load_dataset

    run_dir = Path(run_dir)
    options = load_json(run_dir / "run.json")["options"]
    if options.get("backbone"):  # the backbone's tokenizer, as saved in the run
        tokenizer = Tokenizer.from_file(str(run_dir / "tokenizer.json"))
        return load_dataset(options["dataset"], split_seed=options["split_seed"], limit=options["limit"], tokenizer=tokenizer)
    data = load_dataset(options["dataset"], split_seed=options["split_seed"], limit=options["limit"])
    if data.tokenizer is not None and (run_dir / "tokenizer.json").exists():
        data.tokenizer = Tokenizer.from_file(str(run_dir / "tokenizer.json"))
        for split in (data.train, data.validation, data.test):
            split.inputs, split.mask = encode_texts(data.tokenizer, split.texts, data.max_components)
    return data
