"""The shared nearest-atom search: exact FAISS search equals brute force, HNSW and IVF find the
true neighbours, energy re-ranking equals the exhaustive energy ranking where the candidates
reach past the well."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from contract.index import ENERGY_CANDIDATES, EXACT_MAX_ELEMENTS, AtomIndex, IndexSpec, choose_spec
from contract.bundle import PotentialSpec
from contract.potential import pair_energy

SPEC = PotentialSpec(kind="morse", well_depth=1.0, morse_alpha=6.0, cutoff_widths=3.0, lj_force_cap_ratio=0.8,
                     coulomb_strength=0.0, coulomb_screening=2.0, coulomb_softening=0.1, weight=1.0)
ENERGY = functools.partial(pair_energy, spec=SPEC)


def sphere(m: int, k: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(m, k)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)  # on the unit sphere, like the model's z


def make_index(m: int = 500, k: int = 8, seed: int = 0, spec: IndexSpec | None = None) -> AtomIndex:
    rng = np.random.default_rng(seed + 1)
    return AtomIndex(sphere(m, k, seed), rng.uniform(0.05, 0.35, m), rng.uniform(-0.5, 0.5, m), spec=spec, energy=ENERGY)


def brute_force(index: AtomIndex, query: np.ndarray, radius: float, charge: float) -> tuple[np.ndarray, np.ndarray]:
    distance = np.linalg.norm(index.embedding.astype(np.float64) - query, axis=1)
    energy = pair_energy(distance, radius, index.radius.astype(np.float64), charge, index.charge.astype(np.float64), SPEC)
    return distance, energy


def test_small_banks_are_exact_and_large_ones_approximate():
    assert choose_spec(1000, 384).kind == "flat"
    assert choose_spec(EXACT_MAX_ELEMENTS // 384 + 1, 384).kind == "hnsw"
    assert choose_spec(10, 4, "ivf").params["nlist"] >= 1
    with pytest.raises(ValueError, match="index kind"):
        choose_spec(10, 4, "annoy")


def test_distance_ranking_matches_brute_force():
    index = make_index()
    queries = np.random.default_rng(1).normal(size=(6, 8)).astype(np.float32)
    radius, charge = np.full(6, 0.2, np.float32), np.zeros(6, np.float32)
    counts = [1, 5, 10, 0, 3, 7]
    found = index.search(queries, radius, charge, counts, ["distance"] * 6)
    for q, (neighbors, k) in enumerate(zip(found, counts)):
        distance, energy = brute_force(index, queries[q], 0.2, 0.0)
        assert len(neighbors.rows) == k
        np.testing.assert_array_equal(neighbors.rows, np.argsort(distance)[:k])
        np.testing.assert_allclose(neighbors.distance, np.sort(distance)[:k], atol=1e-5)
        np.testing.assert_allclose(neighbors.energy, energy[neighbors.rows], atol=1e-5)


def test_energy_ranking_matches_exhaustive_ranking_when_candidates_reach_past_the_well():
    index = make_index()
    queries = index.embedding[[3, 40, 200]] + 0.05  # many bank atoms sit inside the bond well
    radius, charge = np.array([0.1, 0.2, 0.3], np.float32), np.zeros(3, np.float32)
    found = index.search(queries, radius, charge, [10, 10, 10], ["energy"] * 3)
    for q, neighbors in enumerate(found):
        distance, energy = brute_force(index, queries[q], float(radius[q]), 0.0)
        # the precondition: the candidate set reaches past the farthest atom that can still bind
        well_end = radius[q] + index.radius.max() + SPEC.cutoff_widths / SPEC.morse_alpha
        assert np.sort(distance)[ENERGY_CANDIDATES - 1] > well_end
        assert np.all(np.diff(neighbors.energy) >= -1e-6)  # most strongly bound first
        np.testing.assert_allclose(neighbors.energy, np.sort(energy)[:10], atol=1e-5)
        assert neighbors.energy[0] < 0


def test_bank_atom_finds_itself_at_distance_zero():
    index = make_index()
    rows = [0, 17, 499]
    found = index.search(index.embedding[rows], index.radius[rows], index.charge[rows], [3] * 3, ["distance"] * 3)
    for row, neighbors in zip(rows, found):
        assert neighbors.rows[0] == row
        assert neighbors.distance[0] == pytest.approx(0.0, abs=1e-6)  # recomputed, not from |a|^2+|b|^2-2ab


def test_more_neighbors_than_atoms_returns_the_whole_bank():
    index = make_index(m=4)
    found = index.search(index.embedding[:1], index.radius[:1], index.charge[:1], [10], ["energy"])
    assert sorted(found[0].rows.tolist()) == [0, 1, 2, 3]
    assert np.isfinite(found[0].energy).all()


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_indexes_find_the_true_neighbours(kind):
    bank = sphere(4000, 16, seed=2)
    queries = sphere(50, 16, seed=3)
    exact = AtomIndex(bank, spec=IndexSpec("flat"))
    approximate = AtomIndex(bank, spec=choose_spec(len(bank), 16, kind))
    true_rows, true_distance = exact.nearest(queries, 10)
    rows, distance = approximate.nearest(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows.tolist(), true_rows.tolist())])
    assert recall >= 0.9, recall
    found = dict(zip(rows[0].tolist(), distance[0].tolist()))  # distances are exact even when rows are not
    for row, d in zip(true_rows[0].tolist(), true_distance[0].tolist()):
        if row in found:
            assert found[row] == pytest.approx(d, abs=1e-5)


def test_nearest_other_atom_leaves_the_query_atom_out():
    bank = sphere(300, 8, seed=4)
    index = AtomIndex(bank)
    rows, distance = index.nearest(bank[:20], 1, exclude=np.arange(20))
    d = np.linalg.norm(bank[:20, None, :] - bank[None], axis=2)
    d[np.arange(20), np.arange(20)] = np.inf
    np.testing.assert_array_equal(rows[:, 0], d.argmin(1))
    np.testing.assert_allclose(distance[:, 0], d.min(1), atol=1e-5)


def test_nearest_pads_with_minus_one_past_the_bank():
    rows, distance = AtomIndex(sphere(2, 4, seed=5)).nearest(sphere(1, 4, seed=6), 3)
    assert rows[0, 2] == -1 and np.isinf(distance[0, 2])
    assert sorted(rows[0, :2].tolist()) == [0, 1]


def test_energy_ranking_without_an_energy_function_is_refused():
    index = AtomIndex(sphere(10, 4, seed=7))
    with pytest.raises(ValueError, match="energy function"):
        index.search(index.embedding[:1], np.zeros(1), np.zeros(1), [2], ["energy"])
