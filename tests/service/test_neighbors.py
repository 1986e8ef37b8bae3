"""Exact neighbor search: same answer as brute force, by distance and by energy."""

from __future__ import annotations

import numpy as np
import pytest

from service.bundle import Bank, PotentialSpec
from service.neighbors import NeighborIndex
from service.potential import pair_energy

SPEC = PotentialSpec(kind="morse", well_depth=1.0, morse_alpha=6.0, cutoff_widths=3.0, lj_force_cap_ratio=0.8,
                     coulomb_strength=0.0, coulomb_screening=2.0, coulomb_softening=0.1, weight=1.0)


def make_bank(m: int = 500, k: int = 8, seed: int = 0) -> Bank:
    rng = np.random.default_rng(seed)
    embedding = rng.normal(size=(m, k)).astype(np.float32)
    embedding /= np.linalg.norm(embedding, axis=1, keepdims=True)  # on the unit sphere, like the model's z
    return Bank(embedding=embedding, radius=rng.uniform(0.05, 0.35, m).astype(np.float32),
                charge=rng.uniform(-0.5, 0.5, m).astype(np.float32), id=np.arange(m) + 1000,
                label=rng.integers(0, 3, m))


def brute_force(bank: Bank, query: np.ndarray, radius: float, charge: float) -> tuple[np.ndarray, np.ndarray]:
    distance = np.linalg.norm(bank.embedding.astype(np.float64) - query, axis=1)
    energy = pair_energy(distance, radius, bank.radius.astype(np.float64), charge, bank.charge.astype(np.float64), SPEC)
    return distance, energy


def test_distance_ranking_matches_brute_force():
    bank = make_bank()
    index = NeighborIndex(bank, SPEC)
    rng = np.random.default_rng(1)
    queries = rng.normal(size=(6, 8)).astype(np.float32)
    radius, charge = np.full(6, 0.2, np.float32), np.zeros(6, np.float32)
    counts = [1, 5, 10, 0, 3, 7]
    found = index.search(queries, radius, charge, counts, ["distance"] * 6)
    for q, (neighbors, k) in enumerate(zip(found, counts)):
        distance, energy = brute_force(bank, queries[q], 0.2, 0.0)
        assert len(neighbors.rows) == k
        np.testing.assert_array_equal(neighbors.rows, np.argsort(distance)[:k])
        np.testing.assert_allclose(neighbors.distance, np.sort(distance)[:k], atol=1e-5)
        np.testing.assert_allclose(neighbors.energy, energy[neighbors.rows], atol=1e-5)


def test_energy_ranking_matches_brute_force():
    bank = make_bank()
    index = NeighborIndex(bank, SPEC)
    # queries on the sphere too, so many bank atoms sit inside the bond well
    queries = bank.embedding[[3, 40, 200]] + 0.05
    radius, charge = np.array([0.1, 0.2, 0.3], np.float32), np.zeros(3, np.float32)
    found = index.search(queries, radius, charge, [10, 10, 10], ["energy"] * 3)
    for q, neighbors in enumerate(found):
        _, energy = brute_force(bank, queries[q], float(radius[q]), 0.0)
        assert np.all(np.diff(neighbors.energy) >= -1e-6)  # most strongly bound first
        np.testing.assert_allclose(neighbors.energy, np.sort(energy)[:10], atol=1e-5)
        assert neighbors.energy[0] < 0


def test_bank_item_finds_itself_at_distance_zero():
    bank = make_bank()
    index = NeighborIndex(bank, SPEC)
    rows = [0, 17, 499]
    found = index.search(bank.embedding[rows], bank.radius[rows], bank.charge[rows], [3] * 3, ["distance"] * 3)
    for row, neighbors in zip(rows, found):
        assert neighbors.rows[0] == row
        assert neighbors.distance[0] == pytest.approx(0.0, abs=1e-6)  # recomputed, not from |a|^2+|b|^2-2ab


def test_more_neighbors_than_atoms_returns_the_whole_bank():
    bank = make_bank(m=4)
    found = NeighborIndex(bank, SPEC).search(bank.embedding[:1], bank.radius[:1], bank.charge[:1], [10], ["energy"])
    assert sorted(found[0].rows.tolist()) == [0, 1, 2, 3]
