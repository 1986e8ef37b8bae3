"""Interatomic pair potentials, written on distances so every term is finite at r = 0.

All functions take the distance r and the contact distance r_e = R_a + R_b (broadcastable
tensors) and return energies of the same shape. Nothing divides by a raw r: distances come from
`pair_distances`, which clamps squared distances before the square root.
"""

from __future__ import annotations

import math

import torch

from .config import AtomConfig

DISTANCE_EPS = 1e-8  # added to squared distances: d sqrt / d r2 stays finite at r = 0
MAX_EXPONENT = 30.0  # exp() arguments are clamped so a far-inside pair cannot overflow


def pair_distances(z: torch.Tensor) -> torch.Tensor:
    """(B, k) -> (B, B) Euclidean distances, differentiable at coincident points."""
    diff = z[:, None, :] - z[None, :, :]  # (B, B, k); cdist has no safe gradient at 0
    return torch.sqrt((diff * diff).sum(-1) + DISTANCE_EPS)


def exclusion(r: torch.Tensor, r_e: torch.Tensor, depth: float) -> torch.Tensor:
    """Soft-sphere repulsion D (1 - r/r_e)^2 inside contact, 0 outside; D at r = 0."""
    overlap = torch.clamp(1.0 - r / r_e, min=0.0)
    return depth * overlap * overlap


def smooth_cutoff(r: torch.Tensor, r_on: torch.Tensor, r_off: torch.Tensor) -> torch.Tensor:
    """1 below r_on, 0 above r_off, a cosine in between (zero slope at both ends)."""
    t = torch.clamp((r - r_on) / (r_off - r_on), 0.0, 1.0)
    return 0.5 * (1.0 + torch.cos(math.pi * t))


def morse_well(
    r: torch.Tensor, r_e: torch.Tensor, depth: float, alpha: float, cutoff_widths: float
) -> torch.Tensor:
    """Morse D[(1 - e^{-alpha (r - r_e)})^2 - 1]: minimum -D at r_e, smoothly 0 past the cutoff.

    The switch starts at r_e with zero slope, so the minimum stays exactly at r_e with depth -D.
    """
    exponent = torch.clamp(-alpha * (r - r_e), max=MAX_EXPONENT)
    morse = depth * ((1.0 - torch.exp(exponent)) ** 2 - 1.0)
    return morse * smooth_cutoff(r, r_e, r_e + cutoff_widths / alpha)


def lennard_jones(
    r: torch.Tensor, r_e: torch.Tensor, depth: float, force_cap_ratio: float, cutoff_widths: float
) -> torch.Tensor:
    """4D[(s/r)^12 - (s/r)^6] with s = r_e / 2^(1/6) (minimum -D at r_e).

    Below r_cap = force_cap_ratio * s the curve is continued by its tangent, so the force is
    capped and the energy finite at r = 0. Switched off smoothly like the Morse well.
    """
    sigma = r_e / 2.0 ** (1.0 / 6.0)
    r_cap = force_cap_ratio * sigma
    r_safe = torch.maximum(r, r_cap)
    s6 = (sigma / r_safe) ** 6
    energy = 4.0 * depth * (s6 * s6 - s6)
    # dV/dr at r_cap, used only where r < r_cap
    s6_cap = (1.0 / force_cap_ratio) ** 6
    slope = 4.0 * depth * (-12.0 * s6_cap * s6_cap + 6.0 * s6_cap) / r_cap
    energy = energy + torch.where(r < r_cap, slope * (r - r_cap), torch.zeros_like(r))
    return energy * smooth_cutoff(r, r_e, r_e * (1.0 + cutoff_widths / 4.0))


def screened_coulomb(
    r: torch.Tensor, q_a: torch.Tensor, q_b: torch.Tensor, strength: float, kappa: float, softening: float
) -> torch.Tensor:
    """k q_a q_b exp(-kappa r) / sqrt(r^2 + s^2): softened, so finite at r = 0."""
    return strength * q_a * q_b * torch.exp(-kappa * r) / torch.sqrt(r * r + softening * softening)


def bond_well(r: torch.Tensor, r_e: torch.Tensor, config: AtomConfig) -> torch.Tensor:
    if config.potential == "morse":
        return morse_well(r, r_e, config.well_depth, config.morse_alpha, config.cutoff_widths)
    if config.potential == "lj":
        return lennard_jones(r, r_e, config.well_depth, config.lj_force_cap_ratio, config.cutoff_widths)
    raise ValueError(f"unknown potential {config.potential!r}; expected 'morse' or 'lj'")


def pair_energy(
    r: torch.Tensor,
    radius_a: torch.Tensor,
    radius_b: torch.Tensor,
    charge_a: torch.Tensor,
    charge_b: torch.Tensor,
    bond: torch.Tensor,
    config: AtomConfig,
) -> torch.Tensor:
    """V_ab = exclusion (every pair) + bond * well + screened Coulomb (when enabled).

    `bond` in [0, 1] says how strongly a pair should bond (1 = same label). Serving uses bond = 1:
    the energy of the two atoms as if they bonded. As with covalent versus van der Waals radii,
    atoms that do not bond are kept apart at a larger distance: nonbonded_scale * r_e.
    """
    r_e = radius_a + radius_b
    exclusion_distance = r_e * (1.0 + (config.nonbonded_scale - 1.0) * (1.0 - bond))
    energy = exclusion(r, exclusion_distance, config.well_depth) + bond * bond_well(r, r_e, config)
    if config.coulomb_strength:
        energy = energy + screened_coulomb(
            r, charge_a, charge_b, config.coulomb_strength, config.coulomb_screening, config.coulomb_softening
        )
    return energy


def batch_potential_energy(
    embedding: torch.Tensor,
    radius: torch.Tensor,
    charge: torch.Tensor,
    bond: torch.Tensor,
    config: AtomConfig,
) -> torch.Tensor:
    """Energy per atom U = sum_{a<b} V_ab / B for a batch: embedding (B,k), radius/charge (B,), bond (B,B)."""
    batch = embedding.shape[0]
    r = pair_distances(embedding)  # (B, B)
    energy = pair_energy(r, radius[:, None], radius[None, :], charge[:, None], charge[None, :], bond, config)
    upper = torch.triu(torch.ones(batch, batch, dtype=torch.bool, device=embedding.device), diagonal=1)
    return (energy * upper).sum() / batch
