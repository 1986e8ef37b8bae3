"""The sweep's variants of the atom term (issue 17): a projection head for the potential,
bonds from predicted classes, the lambda scale of the warm-up, and old configs still loading."""

import dataclasses

import pytest
import torch

from model import AtomConfig, atom_loss
from model.atom import batch_bonds

from .test_atom import batch, tiny

torch.manual_seed(0)
LABELS = torch.tensor([0, 1, 2, 1])


def test_projection_leaves_the_outputs_alone_and_takes_the_potential_gradient():
    plain, projected = tiny("text"), tiny("text", potential_projection=5)
    inputs, mask = batch("text")
    a, b = plain(inputs, mask), projected(inputs, mask)
    for name in ("embedding", "roles", "composition", "logits", "element_logits"):
        assert getattr(a, name).shape == getattr(b, name).shape, name
    radius = projected.config.sphere_radius
    assert torch.allclose(b.embedding.norm(dim=1), torch.full((4,), radius), atol=1e-5)  # z: the exported embedding
    assert a.projected is None and b.projected.shape == (4, 5)
    assert torch.allclose(b.projected.norm(dim=1), torch.full((4,), radius), atol=1e-5)
    # the potential is what moves the projection: its weights get a gradient from the energy alone
    losses = atom_loss(b, LABELS, mask, projected.config)
    weight = projected.projection.weight
    (grad,) = torch.autograd.grad(losses["loss"], weight, retain_graph=True)
    assert grad.abs().sum() > 0
    no_potential = dataclasses.replace(projected.config, well_depth=0.0)  # exclusion and wells off
    (grad,) = torch.autograd.grad(atom_loss(b, LABELS, mask, no_potential)["loss"], weight, allow_unused=True)
    assert grad is None or float(grad.abs().sum()) == 0.0


def test_predicted_bonds_are_the_agreement_of_class_probabilities():
    model = tiny("text", bond_source="predicted", valence=0)
    inputs, mask = batch("text")
    out = model(inputs, mask)
    probs = torch.softmax(out.logits.detach(), dim=-1)
    assert torch.allclose(batch_bonds(out, LABELS, model.config), probs @ probs.T)
    labelled = batch_bonds(out, LABELS, dataclasses.replace(model.config, bond_source="label"))
    assert torch.equal(labelled, (LABELS[:, None] == LABELS[None, :]).float())
    assert torch.equal(batch_bonds(out, LABELS, model.config, supervised_bonds=True), labelled)  # the argument wins


def test_potential_scale_multiplies_lambda_and_zero_lambda_stays_the_baseline():
    model = tiny("text", potential_weight=0.3)
    inputs, mask = batch("text")
    out = model(inputs, mask)
    full = atom_loss(out, LABELS, mask, model.config)
    for scale in (0.0, 0.5, 1.0):
        losses = atom_loss(out, LABELS, mask, model.config, potential_scale=scale)
        assert float(losses["lambda"]) == pytest.approx(0.3 * scale)
        assert float(losses["potential"]) == float(full["potential"])  # computed even at scale 0
        regulariser = (full["loss"] - full["task"]) / 0.3
        assert torch.allclose(losses["loss"], losses["task"] + 0.3 * scale * regulariser, atol=1e-6)
    baseline = dataclasses.replace(model.config, potential_weight=0.0)
    losses = atom_loss(out, LABELS, mask, baseline, potential_scale=0.5)
    assert float(losses["lambda"]) == 0.0 and float(losses["potential"]) == 0.0


def test_a_config_saved_before_the_variants_loads_with_them_off():
    old = AtomConfig().to_dict()
    del old["potential_projection"], old["bond_source"]
    config = AtomConfig.from_dict(old)
    assert config.potential_projection == 0 and config.bond_source == "label"
