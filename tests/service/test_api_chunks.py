"""Long texts read whole ("chunk": true): windows through the batcher, the pooled atom, character
offsets, the chunks' spans and bonds, limits and metrics; texts behind the bundle's neighbours."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from contract import preprocess
from contract.potential import pair_energy
from service.app import create_app
from service.schemas import AtomizeResponse

from .test_api_meta import metric

WINDOW = 8  # the service's component limit here: the tiny synthetic texts need several windows
MAX_CHUNKS = 12


@pytest.fixture(scope="module")
def client(text_case):
    settings = text_case.settings(max_components_per_input=WINDOW, max_chunks_per_input=MAX_CHUNKS, chunk_overlap=2)
    with TestClient(create_app(settings, bundle=text_case.bundle)) as client:
        yield client


@pytest.fixture(scope="module")
def long_text(text_case) -> str:
    return " ".join(text_case.train_inputs[:3])


def tokens_of(text_case, text: str) -> list[str]:
    tokenizer = preprocess.load_tokenizer(text_case.path / "tokenizer.json")
    tokenizer.no_truncation()
    return tokenizer.encode(text).tokens


def atomize(client, inputs, **options) -> AtomizeResponse:
    response = client.post("/v1/atomize", json={"inputs": inputs, **options})
    assert response.status_code == 200, response.text
    return AtomizeResponse.model_validate(response.json())


def test_a_long_text_is_read_whole_with_each_token_once_at_its_characters(client, text_case, long_text):
    (result,) = atomize(client, [long_text], chunk=True, include=["components", "chunks"]).results
    expected = tokens_of(text_case, long_text)
    assert len(expected) > 2 * WINDOW
    assert [c.token for c in result.components] == expected
    assert all(long_text[c.start : c.end] == c.token for c in result.components)
    assert not result.truncated
    assert 2 < len(result.chunks) <= MAX_CHUNKS
    assert result.chunks[0].start == 0 and result.chunks[-1].end == len(long_text)
    assert [c.start for c in result.chunks] == sorted(c.start for c in result.chunks)


def test_the_pooled_atom_is_built_from_the_windows_atoms(client, text_case, long_text):
    (result,) = atomize(client, [long_text], chunk=True, include=["embedding", "composition", "chunks"]).results
    windows = np.array([c.embedding for c in result.chunks])
    assert text_case.bundle.manifest.input.chunk_pooling == "mass"  # what export writes (training/export.py)
    mass = np.array([c.composition.mass for c in result.chunks])
    mean = (mass[:, None] * windows).sum(axis=0) / mass.sum()
    radius = np.linalg.norm(windows, axis=1).mean()
    np.testing.assert_allclose(result.embedding, mean * radius / np.linalg.norm(mean), atol=1e-5)
    # every component counted once: the soft counts are those of the text's own components
    (once,) = atomize(client, [long_text], chunk=True, include=["components"]).results
    roles = {name: sum(c.probabilities[name] for c in once.components) for name in ("electron", "proton", "neutron")}
    assert sum(c.components for c in result.chunks) > len(once.components)  # the windows overlap
    composition = result.composition
    assert composition.electrons + composition.protons + composition.neutrons == pytest.approx(len(once.components), rel=1e-4)
    assert composition.protons == pytest.approx(roles["proton"], rel=0.05)
    assert composition.mass == pytest.approx(composition.protons + composition.neutrons, rel=1e-5)
    assert composition.charge == pytest.approx((composition.protons - composition.electrons) / len(once.components),
                                               rel=1e-4, abs=1e-6)
    spec = text_case.bundle.manifest.potential
    for before, after in zip(result.chunks, result.chunks[1:]):
        distance = np.linalg.norm(np.asarray(before.embedding) - np.asarray(after.embedding))
        expected = pair_energy(np.array(distance), np.array(before.composition.radius), np.array(after.composition.radius),
                               np.array(before.composition.charge), np.array(after.composition.charge), spec)
        assert before.energy_with_next == pytest.approx(float(expected), rel=1e-4, abs=1e-5)
    assert result.chunks[-1].energy_with_next is None


def test_each_window_is_atomized_as_the_same_text_sent_alone(client, long_text):
    (result,) = atomize(client, [long_text], chunk=True, include=["embedding", "chunks"]).results
    pieces = [long_text[c.start : c.end] for c in result.chunks]
    alone = atomize(client, pieces, include=["embedding"]).results
    for chunk, single in zip(result.chunks, alone):
        assert not single.truncated  # a window fits the model by construction
        np.testing.assert_allclose(chunk.embedding, single.embedding, atol=1e-5)


def test_a_text_that_fits_is_answered_as_without_chunking(client):
    text = "t03 t01 t04 t01 t05"
    (chunked,) = atomize(client, [text], chunk=True, neighbors=3, include=["embedding", "components", "neighbors", "chunks"]).results
    (plain,) = atomize(client, [text], neighbors=3, include=["embedding", "components", "neighbors"]).results
    np.testing.assert_allclose(chunked.embedding, plain.embedding, atol=1e-6)
    assert [c.token for c in chunked.components] == [c.token for c in plain.components]
    assert [n.id for n in chunked.neighbors] == [n.id for n in plain.neighbors]
    assert len(chunked.chunks) == 1 and chunked.chunks[0].energy_with_next is None


def test_the_pooled_atom_finds_its_neighbours_like_any_atom(client, text_case, long_text):
    (result,) = atomize(client, [long_text], chunk=True, neighbors=4, include=["embedding", "neighbors"]).results
    bank = text_case.bundle.atoms
    distance = np.linalg.norm(bank.embedding - np.asarray(result.embedding), axis=1)
    assert [n.id for n in result.neighbors] == [int(bank.id[i]) for i in np.argsort(distance, kind="stable")[:4]]


def test_limits_without_chunking_and_past_the_window_count(client, text_case, long_text):
    refused = client.post("/v1/atomize", json={"inputs": [long_text], "truncate": False})
    assert refused.status_code == 413 and '"chunk": true' in refused.json()["error"]["message"]
    assert client.post("/v1/atomize", json={"inputs": [long_text], "truncate": False, "chunk": True}).status_code == 200
    longer = " ".join(text_case.train_inputs[:40])
    too_many = client.post("/v1/atomize", json={"inputs": ["t01", longer], "chunk": True})
    assert too_many.status_code == 413
    assert too_many.json()["error"]["message"].startswith("inputs[1] is ")
    assert f"max_chunks_per_input={MAX_CHUNKS}" in too_many.json()["error"]["message"]


def test_embeddings_read_long_texts_whole_too(client, long_text):
    (pooled,) = atomize(client, [long_text], chunk=True, include=["embedding"]).results
    response = client.post("/v1/embeddings", json={"input": long_text, "chunk": True})
    assert response.status_code == 200, response.text
    data = response.json()["data"][0]
    np.testing.assert_allclose(data["embedding"], pooled.embedding, atol=1e-6)
    assert data["truncated"] is False
    cut = client.post("/v1/embeddings", json={"input": long_text}).json()["data"][0]
    assert cut["truncated"] is True


def test_metrics_count_the_windows(client, long_text):
    before = metric(client.get("/metrics").text, "atom_chunks_total")
    (result,) = atomize(client, [long_text, "t01"], chunk=True, include=["chunks"]).results[:1]
    after = metric(client.get("/metrics").text, "atom_chunks_total")
    assert after - before == len(result.chunks)  # the short text is one window, not a chunked text


def test_the_request_schemas_document_chunking(client):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    for name in ("AtomizeRequest", "EmbeddingsRequest"):
        assert schemas[name]["properties"]["chunk"]["default"] is False
    assert "chunks" in schemas["AtomizeRequest"]["properties"]["include"]["items"]["enum"]
    assert {"start", "end", "energy_with_next"} <= set(schemas["Chunk"]["properties"])


def test_the_bundles_own_neighbours_carry_their_training_text(text_client, text_case):
    rows = [2, 9]
    body = atomize(text_client, [text_case.train_inputs[r] for r in rows], neighbors=3, include=["neighbors"])
    for row, result in zip(rows, body.results):
        assert result.neighbors[0].distance < 1e-4  # the item itself, or a duplicate of it
        for neighbor in result.neighbors:  # bank ids are training rows
            assert neighbor.metadata == {"text": text_case.train_inputs[neighbor.id]}
    info = text_client.get("/v1/model").json()["bank"]
    assert info["metadata_fields"] == ["text"]
