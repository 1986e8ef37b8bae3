"""Physics of the pair potentials: minimum, depth, finiteness at r = 0, decay, symmetry."""

import pytest
import torch

from model.config import AtomConfig
from model.potentials import (
    batch_potential_energy,
    exclusion,
    lennard_jones,
    morse_well,
    pair_distances,
    pair_energy,
    screened_coulomb,
)

R_E = 0.5
DEPTH = 1.3


def wells():
    return {
        "morse": lambda r: morse_well(r, torch.tensor(R_E, dtype=r.dtype), DEPTH, alpha=6.0, cutoff_widths=3.0),
        "lj": lambda r: lennard_jones(r, torch.tensor(R_E, dtype=r.dtype), DEPTH, force_cap_ratio=0.8, cutoff_widths=3.0),
    }


@pytest.mark.parametrize("kind", ["morse", "lj"])
def test_well_minimum_is_at_contact_distance_with_depth_minus_d(kind):
    r = torch.linspace(0.0, 3.0, 30001, dtype=torch.float64)
    energy = wells()[kind](r)
    at = int(energy.argmin())
    assert abs(float(r[at]) - R_E) < 1e-3
    assert float(energy[at]) == pytest.approx(-DEPTH, abs=1e-6)


@pytest.mark.parametrize("kind", ["morse", "lj"])
def test_well_is_finite_with_finite_gradient_at_zero_and_vanishes_far_away(kind):
    r = torch.tensor([0.0, 1e-9, 0.1], dtype=torch.float64, requires_grad=True)
    energy = wells()[kind](r)
    energy.sum().backward()
    assert torch.isfinite(energy).all() and torch.isfinite(r.grad).all()
    assert float(energy[0]) > 0  # repulsive inside contact
    far = wells()[kind](torch.tensor([5.0, 50.0], dtype=torch.float64))
    assert torch.allclose(far, torch.zeros(2, dtype=torch.float64), atol=1e-12)


def test_exclusion_is_d_at_zero_and_zero_beyond_contact():
    r = torch.tensor([0.0, R_E / 2, R_E, 2 * R_E])
    energy = exclusion(r, torch.tensor(R_E), DEPTH)
    assert energy.tolist() == pytest.approx([DEPTH, DEPTH / 4, 0.0, 0.0])


def test_screened_coulomb_is_finite_at_zero_and_signed_by_charges():
    r = torch.tensor([0.0, 1.0])
    same = screened_coulomb(r, torch.tensor(1.0), torch.tensor(1.0), 1.0, 2.0, 0.1)
    opposite = screened_coulomb(r, torch.tensor(1.0), torch.tensor(-1.0), 1.0, 2.0, 0.1)
    assert float(same[0]) == pytest.approx(10.0)  # 1 / s
    assert (same > 0).all() and torch.allclose(opposite, -same)


def test_identical_atoms_in_one_batch_have_finite_energy_and_gradients():
    z = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    z = torch.cat([z, z[:1]]).requires_grad_(True)  # item 4 duplicates item 0: r = 0
    radius = torch.full((5,), 0.2, requires_grad=True)
    charge = torch.zeros(5)
    bond = torch.ones(5, 5)
    config = AtomConfig(coulomb_strength=1.0)
    energy = batch_potential_energy(z, radius, charge, bond, config)
    energy.backward()
    assert torch.isfinite(energy) and torch.isfinite(z.grad).all() and torch.isfinite(radius.grad).all()


def test_pair_matrix_is_symmetric_and_self_pairs_are_excluded():
    config = AtomConfig()
    z = torch.randn(6, 4) * 0.2
    radius = torch.rand(6) * 0.3 + 0.05
    charge = torch.randn(6)
    bond = torch.ones(6, 6)
    r = pair_distances(z)
    matrix = pair_energy(r, radius[:, None], radius[None, :], charge[:, None], charge[None, :], bond, config)
    assert torch.allclose(matrix, matrix.T)
    expected = sum(float(matrix[a, b]) for a in range(6) for b in range(a + 1, 6)) / 6
    assert float(batch_potential_energy(z, radius, charge, bond, config)) == pytest.approx(expected, rel=1e-5)


def test_far_apart_atoms_have_zero_energy():
    config = AtomConfig()
    z = torch.tensor([[0.0, 0.0], [100.0, 0.0]])
    energy = batch_potential_energy(z, torch.tensor([0.2, 0.2]), torch.zeros(2), torch.ones(2, 2), config)
    assert float(energy) == pytest.approx(0.0, abs=1e-12)
