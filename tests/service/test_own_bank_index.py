"""A large bundle-own bank moves from exact search to an IVF index built after start-up."""

from __future__ import annotations

import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

import contract.index
from contract.bank import Bank
from contract.bundle import BankArrays
from contract.index import AtomIndex, IndexSpec
from service.app import create_app
from service.banks import own_bank_spec, with_index


def served(embedding: np.ndarray, source: str = "bundle") -> Bank:
    index = AtomIndex(embedding, spec=IndexSpec("flat"))
    count = len(embedding)
    arrays = BankArrays(embedding, np.zeros(count, np.float32), np.zeros(count, np.float32), np.zeros(count, np.int64),
                        np.arange(count))
    return Bank(arrays, index, ["a"], "v1", {"atoms": count, "source": source, "search": "flat"})


def test_only_a_bundle_bank_past_the_exact_size_gets_an_index():
    rng = np.random.default_rng(0)
    dim = 64
    past = contract.index.EXACT_MAX_ELEMENTS // dim + 1
    big = rng.normal(size=(past, dim)).astype(np.float32)
    spec = own_bank_spec(served(big))
    assert spec is not None and spec.kind == "ivf" and 1 <= spec.params["nprobe"] <= spec.params["nlist"]
    assert own_bank_spec(served(big[: past - 2])) is None  # exact is the rule below the size
    assert own_bank_spec(served(big, source="/banks/mine")) is None  # a bank folder keeps its own index


def test_the_indexed_bank_answers_for_the_same_atoms():
    rng = np.random.default_rng(1)
    atoms = rng.normal(size=(2000, 16)).astype(np.float32)
    bank = served(atoms)
    bank = bank.__class__(**{**bank.__dict__, "info": {**bank.info, "index_pending": "ivf"}})
    indexed = with_index(bank, IndexSpec("ivf", {"nlist": 16, "nprobe": 16}))  # every list probed: exact
    assert "index_pending" not in indexed.info
    assert indexed.info["search"] == "ivf" and bank.info["search"] == "flat"  # the original is untouched
    assert len(indexed) == len(bank) and indexed.version == bank.version
    rows, distance = indexed.index.nearest(atoms[:50], 3)
    exact_rows, exact_distance = bank.index.nearest(atoms[:50], 3)
    np.testing.assert_array_equal(rows, exact_rows)
    np.testing.assert_allclose(distance, exact_distance, atol=1e-5)
    assert (rows[:, 0] == np.arange(50)).all()


@pytest.mark.parametrize("bank_search, expected", [("auto", "ivf"), ("exact", "flat")])
def test_the_service_swaps_in_the_index_after_start_up_and_keeps_answering(text_case, monkeypatch, bank_search,
                                                                            expected):
    monkeypatch.setattr(contract.index, "EXACT_MAX_ELEMENTS", 0)  # the tiny test bank counts as large
    app = create_app(text_case.settings(bank_search=bank_search), bundle=text_case.bundle)
    with TestClient(app) as client:
        deadline = time.monotonic() + 20
        while client.get("/v1/model").json()["bank"]["search"] != expected and time.monotonic() < deadline:
            assert client.post("/v1/atomize", json={"inputs": ["t01 t02"], "neighbors": 3}).status_code == 200
            time.sleep(0.05)
        bank = client.get("/v1/model").json()["bank"]
        assert bank["search"] == expected and "index_pending" not in bank  # built and swapped, or never pending
        answer = client.post("/v1/atomize", json={"inputs": ["t01 t02"], "neighbors": 3})
        assert answer.status_code == 200 and len(answer.json()["results"][0]["neighbors"]) == 3
        info = [line for line in client.get("/metrics").text.splitlines() if line.startswith("atom_bank_info{")]
        assert len(info) == 1 and f'index="{expected}"' in info[0]
