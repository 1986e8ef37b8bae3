"""The NumPy pair energy equals the torch one (model.potentials) for the same parameters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.config import AtomConfig
from model.potentials import pair_energy as torch_pair_energy
from contract.bundle import PotentialSpec
from contract.potential import pair_energy


def spec_and_config(kind: str, coulomb: float) -> tuple[PotentialSpec, AtomConfig]:
    config = AtomConfig(potential=kind, well_depth=1.3, morse_alpha=5.0, cutoff_widths=2.5, lj_force_cap_ratio=0.8,
                        coulomb_strength=coulomb, coulomb_screening=1.5, coulomb_softening=0.2)
    spec = PotentialSpec(kind=kind, well_depth=config.well_depth, morse_alpha=config.morse_alpha,
                         cutoff_widths=config.cutoff_widths, lj_force_cap_ratio=config.lj_force_cap_ratio,
                         coulomb_strength=config.coulomb_strength, coulomb_screening=config.coulomb_screening,
                         coulomb_softening=config.coulomb_softening, weight=1.0)
    return spec, config


@pytest.mark.parametrize("kind", ["morse", "lj"])
@pytest.mark.parametrize("coulomb", [0.0, 0.7])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_numpy_pair_energy_equals_torch(kind, coulomb, dtype):
    spec, config = spec_and_config(kind, coulomb)
    rng = np.random.default_rng(0)
    n = 2000
    # r = 0 exactly, inside contact, around the well, past the cutoff
    r = np.concatenate([[0.0, 0.0], rng.uniform(0.0, 1.5, n - 2)]).astype(dtype)
    radius_a, radius_b = (rng.uniform(0.05, 0.35, n).astype(dtype) for _ in range(2))
    charge_a, charge_b = (rng.uniform(-1.0, 1.0, n).astype(dtype) for _ in range(2))

    got = pair_energy(r, radius_a, radius_b, charge_a, charge_b, spec)
    expected = torch_pair_energy(*(torch.from_numpy(a) for a in (r, radius_a, radius_b, charge_a, charge_b)),
                                 torch.ones(n, dtype=torch.from_numpy(r).dtype), config).numpy()

    assert np.isfinite(got).all()
    assert got.dtype == dtype
    # float32: energies near r = 0 reach ~1e3, where one float32 ulp is ~1e-4, so relative there
    rtol = 0 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=1e-5)


def test_energy_has_its_minimum_at_contact():
    spec, _ = spec_and_config("morse", 0.0)
    r = np.linspace(0.0, 1.0, 10001)
    energy = pair_energy(r, np.float64(0.1), np.float64(0.15), np.float64(0.0), np.float64(0.0), spec)
    assert r[np.argmin(energy)] == pytest.approx(0.25, abs=1e-3)
    assert energy.min() == pytest.approx(-spec.well_depth, abs=1e-6)
    assert energy[-1] == 0.0  # switched off past the cutoff
