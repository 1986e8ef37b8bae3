"""The training loop: files it writes, checkpoints without pickle, resume, evaluation metrics."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from training.checkpoint import load_json, load_model
from training.evaluate import evaluate_run, knn_accuracy, role_recovery, uniformity
from training.train import train

from .conftest import tiny_options


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_run_folder_has_config_weights_and_metrics(text_run):
    for name in ("config.json", "run.json", "best.safetensors", "last.safetensors", "state.json", "tokenizer.json"):
        assert (text_run / name).is_file(), name
    records = read_metrics(text_run)
    epochs = [r for r in records if r["kind"] == "epoch"]
    steps = [r for r in records if r["kind"] == "step"]
    assert [e["epoch"] for e in epochs] == [0, 1]
    assert steps and all(np.isfinite(r["loss"]) and np.isfinite(r["potential"]) for r in steps)
    assert all(abs(sum(e["role_usage"]) - 1.0) < 1e-4 for e in epochs)
    state = load_json(text_run / "state.json")
    assert state["epoch"] == 2 and state["best_val_accuracy"] == max(e["val_accuracy"] for e in epochs)


def test_checkpoint_rebuilds_the_same_model_from_the_folder_alone(text_run):
    model = load_model(text_run)
    weights = load_file(str(text_run / "best.safetensors"))
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, weights[name]), name
    assert model.config.d_model == 32 and model.config.modality == "text"


def test_resume_continues_from_the_saved_state(tmp_path):
    out = tmp_path / "run"
    train(tiny_options("digits", out, epochs=1, limit=200))
    first = load_json(out / "state.json")
    train(tiny_options("digits", out, epochs=2, limit=200, resume=True))
    second = load_json(out / "state.json")
    epochs = [r["epoch"] for r in read_metrics(out) if r["kind"] == "epoch"]
    assert first["epoch"] == 1 and second["epoch"] == 2
    assert epochs == [0, 1]  # epoch 0 was not trained again
    assert second["step"] == 2 * first["step"]


def test_max_steps_stops_early_and_still_leaves_weights(tmp_path):
    out = train(tiny_options("digits", tmp_path / "run", epochs=5, limit=200, max_steps=3))
    steps = [r["step"] for r in read_metrics(out) if r["kind"] == "step"]
    assert max(steps) <= 3 and (out / "best.safetensors").exists()


def test_eval_every_validates_at_its_interval_and_at_the_last_epoch(tmp_path):
    out = train(tiny_options("digits", tmp_path / "run", epochs=5, limit=200, eval_every=2))
    epochs = [r for r in read_metrics(out) if r["kind"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 3, 4]
    assert load_json(out / "state.json")["best_val_accuracy"] == max(e["val_accuracy"] for e in epochs)


def test_evaluate_reports_every_metric_in_range(text_run):
    results = evaluate_run(text_run)
    assert 0.0 <= results["test_accuracy"] <= 1.0 and 0.0 <= results["knn_accuracy"] <= 1.0
    assert -1.0 <= results["silhouette"] <= 1.0
    assert results["uniformity"] <= 0.0
    assert 0.0 <= results["role_recovery"] <= 1.0  # synthetic has ground-truth roles
    assert sum(results["role_usage"]) == pytest.approx(1.0, abs=1e-4)
    assert results["nn_contact_ratio_median"] > 0
    assert json.loads((text_run / "evaluation.json").read_text()) == results


def test_role_recovery_is_invariant_to_role_names():
    true_roles = np.array([-1, 0, 1, 2, 0])  # token id -> true role; id 0 is padding
    tokens = np.array([[1, 2, 3, 4, 0]])
    mask = tokens > 0
    perfect = np.eye(3)[[1, 2, 0, 1, 0]][None]  # every role renamed: electron->proton->neutron->electron
    assert role_recovery(perfect, mask, tokens, true_roles) == 1.0
    wrong = np.eye(3)[[0, 0, 0, 0, 0]][None]
    assert role_recovery(wrong, mask, tokens, true_roles) == 0.5


def test_uniformity_and_knn_on_known_points():
    same = np.ones((4, 3))
    assert uniformity(same) == pytest.approx(0.0, abs=1e-9)  # every pair at distance 0
    antipodal = np.array([[1.0, 0.0], [-1.0, 0.0]])
    assert uniformity(antipodal) == pytest.approx(-8.0)  # ||x - y||^2 = 4
    train_x = np.array([[1.0, 0.0]] * 5 + [[0.0, 1.0]] * 5)
    train_y = np.array([0] * 5 + [1] * 5)
    assert knn_accuracy(train_x, train_y, np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 1])) == 1.0


@pytest.mark.parametrize("weight", ["0", "0.3"])  # the baseline leaves heads unused: DDP must cope
def test_distributed_training_with_two_cpu_processes(tmp_path, weight):
    """torchrun with 2 processes on gloo: both train, rank 0 writes, the result is loadable."""
    torchrun = Path(sys.executable).with_name("torchrun")
    out = tmp_path / "ddp"
    command = [
        str(torchrun), "--nproc_per_node", "2", "--standalone", "-m", "training.cli", "train",
        "--dataset", "digits", "--out", str(out), "--epochs", "1", "--limit", "300", "--batch-size", "16",
        "--device", "cpu", "--no-progress", "--lambda", weight, "--model", json.dumps({"d_model": 16, "n_layers": 1, "embedding_dim": 8, "n_heads": 2}),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=Path(__file__).parents[2])
    assert result.returncode == 0, result.stderr[-2000:]
    epochs = [r for r in read_metrics(out) if r["kind"] == "epoch"]
    assert len(epochs) == 1  # one writer, not two
    # each optimizer step takes a window of 2 x 16 items, each rank training on its half
    train_size = load_json(out / "run.json")["dataset"]["sizes"]["train"]
    assert epochs[0]["step"] == train_size // 32
    assert load_model(out).config.embedding_dim == 8 and load_model(out).config.potential_weight == float(weight)
    shutil.rmtree(out)


def test_radius_stats_by_hand():
    import numpy as np

    from training.evaluate import radius_stats

    radius = np.array([0.1, 0.2, 0.3, 0.4])
    stats = radius_stats(radius, lengths=np.array([1, 2, 3, 4]), labels=np.array([0, 0, 1, 1]), n_classes=2)
    assert stats["radius_mean"] == pytest.approx(0.25)
    assert stats["radius_cv"] == pytest.approx(np.std(radius, ddof=1) / 0.25)
    assert stats["radius_length_spearman"] == pytest.approx(1.0)
    # class means 0.15 and 0.35: between-class sum of squares 4 * 0.1^2 = 0.04 of a total 0.05
    assert stats["radius_class_eta2"] == pytest.approx(0.8)
    assert stats["radius_by_class"] == pytest.approx([0.15, 0.35])
