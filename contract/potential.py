"""NumPy port of `model/potentials.py` (the service never imports torch).

Same formulas, same clamps, same constants; `tests/service/test_potential.py` checks it against
the torch version. Every function takes distances r and contact distances r_e = R_a + R_b
(broadcastable arrays) and returns energies of the broadcast shape.
"""

from __future__ import annotations

import math

import numpy as np

from .bundle import PotentialSpec

MAX_EXPONENT = 30.0  # exp() arguments are clamped so a far-inside pair cannot overflow


def exclusion(r: np.ndarray, r_e: np.ndarray, depth: float) -> np.ndarray:
    """Soft-sphere repulsion D (1 - r/r_e)^2 inside contact, 0 outside; D at r = 0."""
    overlap = np.maximum(1.0 - r / r_e, 0.0)
    return depth * overlap * overlap


def smooth_cutoff(r: np.ndarray, r_on: np.ndarray, r_off: np.ndarray) -> np.ndarray:
    """1 below r_on, 0 above r_off, a cosine in between."""
    t = np.clip((r - r_on) / (r_off - r_on), 0.0, 1.0)
    return 0.5 * (1.0 + np.cos(math.pi * t))


def morse_well(r: np.ndarray, r_e: np.ndarray, depth: float, alpha: float, cutoff_widths: float) -> np.ndarray:
    """Morse D[(1 - e^{-alpha (r - r_e)})^2 - 1]: minimum -D at r_e, smoothly 0 past the cutoff."""
    exponent = np.minimum(-alpha * (r - r_e), MAX_EXPONENT)
    morse = depth * ((1.0 - np.exp(exponent)) ** 2 - 1.0)
    return morse * smooth_cutoff(r, r_e, r_e + cutoff_widths / alpha)


def lennard_jones(
    r: np.ndarray, r_e: np.ndarray, depth: float, force_cap_ratio: float, cutoff_widths: float
) -> np.ndarray:
    """4D[(s/r)^12 - (s/r)^6], s = r_e / 2^(1/6), continued by its tangent below force_cap_ratio * s."""
    sigma = r_e / 2.0 ** (1.0 / 6.0)
    r_cap = force_cap_ratio * sigma
    r_safe = np.maximum(r, r_cap)
    s6 = (sigma / r_safe) ** 6
    energy = 4.0 * depth * (s6 * s6 - s6)
    s6_cap = (1.0 / force_cap_ratio) ** 6
    slope = 4.0 * depth * (-12.0 * s6_cap * s6_cap + 6.0 * s6_cap) / r_cap  # dV/dr at r_cap
    energy = energy + np.where(r < r_cap, slope * (r - r_cap), 0.0)
    return energy * smooth_cutoff(r, r_e, r_e * (1.0 + cutoff_widths / 4.0))


def screened_coulomb(
    r: np.ndarray, q_a: np.ndarray, q_b: np.ndarray, strength: float, kappa: float, softening: float
) -> np.ndarray:
    """k q_a q_b exp(-kappa r) / sqrt(r^2 + s^2): softened, so finite at r = 0."""
    return strength * q_a * q_b * np.exp(-kappa * r) / np.sqrt(r * r + softening * softening)


def bond_well(r: np.ndarray, r_e: np.ndarray, spec: PotentialSpec) -> np.ndarray:
    if spec.kind == "morse":
        return morse_well(r, r_e, spec.well_depth, spec.morse_alpha, spec.cutoff_widths)
    return lennard_jones(r, r_e, spec.well_depth, spec.lj_force_cap_ratio, spec.cutoff_widths)


def pair_energy(
    r: np.ndarray,
    radius_a: np.ndarray,
    radius_b: np.ndarray,
    charge_a: np.ndarray,
    charge_b: np.ndarray,
    spec: PotentialSpec,
) -> np.ndarray:
    """V_ab = exclusion + well (+ screened Coulomb when enabled), as if the two atoms bonded.

    Serving has no labels, so bond = 1: the energy the pair would have if it bonded.
    """
    r_e = radius_a + radius_b
    energy = exclusion(r, r_e, spec.well_depth) + bond_well(r, r_e, spec)
    if spec.coulomb_strength:
        energy = energy + screened_coulomb(
            r, charge_a, charge_b, spec.coulomb_strength, spec.coulomb_screening, spec.coulomb_softening
        )
    return energy
