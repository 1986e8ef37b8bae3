"""POST /v1/atomize: schema, values against ONNX Runtime run directly, neighbors, include."""

from __future__ import annotations

import numpy as np
import pytest

from contract.potential import pair_energy
from service.schemas import AtomizeResponse

ROWS = [0, 3, 5, 8]


def atomize(client, inputs, **options):
    response = client.post("/v1/atomize", json={"inputs": inputs, **options})
    assert response.status_code == 200, response.text
    return AtomizeResponse.model_validate(response.json())


def test_values_equal_the_onnx_model(client_case):
    client, case = client_case
    body = atomize(client, [case.train_inputs[r] for r in ROWS], neighbors=4)
    expected = case.reference(ROWS)
    manifest = case.bundle.manifest
    assert body.model == manifest.name
    assert [result.index for result in body.results] == list(range(len(ROWS)))
    for i, result in enumerate(body.results):
        np.testing.assert_allclose(result.embedding, expected["embedding"][i], atol=1e-5)
        composition = result.composition.model_dump()
        np.testing.assert_allclose([composition[f] for f in manifest.composition_fields], expected["composition"][i], atol=1e-5)
        assert composition["mass"] == pytest.approx(composition["protons"] + composition["neutrons"], abs=1e-4)
        probabilities = np.array([[c.probabilities[r] for r in manifest.role_names] for c in result.components])
        np.testing.assert_allclose(probabilities, expected["roles"][i], atol=1e-5)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
        assert [c.role for c in result.components] == [manifest.role_names[j] for j in probabilities.argmax(axis=1)]
        assert [c.index for c in result.components] == list(range(len(result.components)))
    assert body.usage["components"] == int(case.model_mask[ROWS].sum())


def test_text_components_show_their_tokens(text_client):
    (result,) = atomize(text_client, ["t03 t01 t03"], include=["components"]).results
    assert [c.token for c in result.components] == ["t03", "t01", "t03"]


def test_numeric_components_are_shown_by_index(numeric_client, numeric_case):
    (result,) = atomize(numeric_client, [numeric_case.train_inputs[0]], include=["components"]).results
    assert all(c.token is None for c in result.components)
    assert len(result.components) == numeric_case.bundle.manifest.input.max_components


def test_a_bank_item_finds_itself_first(client_case):
    client, case = client_case
    bank = case.bundle.atoms
    rows = [1, 10, 25]  # training-split rows; bank ids are training-split row indices
    body = atomize(client, [case.train_inputs[r] for r in rows], neighbors=3, include=["neighbors"])
    for row, result in zip(rows, body.results):
        nearest = result.neighbors[0]
        assert nearest.distance == pytest.approx(0.0, abs=1e-4)
        at_zero = [n.id for n in result.neighbors if n.distance < 1e-4]  # duplicates in the data tie at 0
        assert row in at_zero
        assert nearest.label == case.bundle.manifest.label_names[bank.label[list(bank.id).index(nearest.id)]]


@pytest.mark.parametrize("rank_by", ["distance", "energy"])
def test_neighbors_are_sorted_and_carry_the_pair_energy(client_case, rank_by):
    client, case = client_case
    bank, spec = case.bundle.atoms, case.bundle.manifest.potential
    body = atomize(client, [case.train_inputs[r] for r in ROWS], neighbors=8, rank_by=rank_by)
    for result in body.results:
        neighbors = result.neighbors
        assert len(neighbors) == 8
        key = [n.distance if rank_by == "distance" else n.energy for n in neighbors]
        assert key == sorted(key)
        rows = [list(bank.id).index(n.id) for n in neighbors]
        z = np.asarray(result.embedding)
        distance = np.linalg.norm(bank.embedding[rows] - z, axis=1)
        np.testing.assert_allclose([n.distance for n in neighbors], distance, atol=1e-5)
        energy = pair_energy(distance, result.composition.radius, bank.radius[rows], result.composition.charge,
                             bank.charge[rows], spec)
        # float32 energies: overlapping atoms reach ~1e2, where one ulp is ~1e-5
        np.testing.assert_allclose([n.energy for n in neighbors], energy, rtol=1e-5, atol=1e-5)
    if rank_by == "distance":  # exact search: nothing in the bank is nearer than the last neighbor
        z = np.asarray(body.results[0].embedding)
        everything = np.sort(np.linalg.norm(bank.embedding - z, axis=1))
        np.testing.assert_allclose([n.distance for n in body.results[0].neighbors], everything[:8], atol=1e-5)


def test_include_leaves_parts_out(text_client, text_case):
    raw = text_client.post("/v1/atomize", json={"inputs": [text_case.train_inputs[0]], "include": ["composition"]}).json()
    assert set(raw["results"][0]) == {"index", "truncated", "composition"}
    raw = text_client.post("/v1/atomize", json={"inputs": [text_case.train_inputs[0]], "include": []}).json()
    assert raw["results"][0] == {"index": 0, "truncated": False}


def test_zero_neighbors_gives_an_empty_list(text_client, text_case):
    (result,) = atomize(text_client, [text_case.train_inputs[0]], neighbors=0).results
    assert result.neighbors == []
    assert len(result.embedding) == text_case.bundle.manifest.embedding_dim


def test_default_is_five_neighbors_by_distance(numeric_client, numeric_case):
    (result,) = atomize(numeric_client, [numeric_case.train_inputs[2]]).results
    assert len(result.neighbors) == 5
    assert [n.distance for n in result.neighbors] == sorted(n.distance for n in result.neighbors)
