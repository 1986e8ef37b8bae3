"""The sweep's variants reach training (issue 17): lambda warm-up, settings through
model_overrides, and a run with the potential on a projection still exports."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from training.checkpoint import load_model, load_run_dataset
from training.export import OUTPUT_NAMES, export_bundle
from training.train import TrainOptions, build_config, potential_factor, train

from .conftest import tiny_options


def test_lambda_warmup_rises_linearly_over_the_given_epochs():
    options = TrainOptions(potential_warmup_epochs=1.5)
    assert [potential_factor(step, 10, options) for step in (0, 5, 15, 30)] == [0.0, 5 / 15, 1.0, 1.0]
    assert potential_factor(0, 10, TrainOptions()) == 1.0  # off by default


def test_sweep_settings_reach_the_config_through_model_overrides():
    from training.data import load_dataset

    overrides = dict(valence=0, nonbonded_scale=1.5, potential="lj", coulomb_strength=0.5, radius_mode="shell",
                     potential_projection=8, bond_source="predicted")
    config = build_config(TrainOptions(model_overrides=overrides), load_dataset("synthetic", limit=50))
    assert {name: getattr(config, name) for name in overrides} == overrides


def test_warmup_is_logged_and_a_projected_run_exports_only_the_embedding(tmp_path):
    run = train(tiny_options(
        "synthetic", tmp_path / "run", epochs=1, potential_warmup_epochs=1.0,
        model_overrides={"d_model": 32, "n_layers": 1, "embedding_dim": 16, "n_heads": 2, "potential_projection": 8},
    ))
    steps = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "step"]
    lambdas = [r["lambda"] for r in steps]
    assert lambdas == sorted(lambdas) and 0 < lambdas[0] < lambdas[-1] <= 0.3

    bundle = export_bundle(run, tmp_path / "bundle")  # checks ONNX against torch on its own
    graph = onnx.load(str(bundle / "encoder.onnx")).graph
    assert [o.name for o in graph.output] == list(OUTPUT_NAMES)
    model = load_model(run)
    assert model.projection.out_features == 8
    split = load_run_dataset(run).test
    with torch.no_grad():
        out = model(torch.as_tensor(split.inputs[:4], dtype=torch.long), torch.as_tensor(split.mask[:4]))
    assert out.embedding.shape[1] == 16
    assert np.allclose(out.embedding.norm(dim=1).numpy(), model.config.sphere_radius, atol=1e-5)
