"""The bank folder: written and read back whole, validated, refused when built with another bundle."""

from __future__ import annotations

import json

import numpy as np
import pytest

from contract.bank import BankArrays, BankError, BuiltWith, SourceInfo, load_bank, write_bank
from contract.projection import fit_projection
from contract.index import AtomIndex, build_faiss, choose_spec


def make_bank(out, m=40, k=6, spec=None, digest="d" * 64, ids=None):
    rng = np.random.default_rng(0)
    arrays = BankArrays(embedding=rng.normal(size=(m, k)).astype(np.float32), radius=rng.uniform(0.1, 0.2, m),
                        charge=rng.uniform(-1, 1, m), label=rng.integers(-1, 2, m),
                        id=np.arange(m) if ids is None else ids)
    spec = spec or choose_spec(m, k)
    lines = [(json.dumps({"text": f"doc {i}", "n": i}) + "\n").encode() for i in range(m)]
    manifest = write_bank(out, arrays, lines, built_with=BuiltWith(name="b", version="1", digest=digest),
                          label_names=["cat", "dog"], metadata_fields=["n", "text"],
                          source=SourceInfo(file="x.csv", format="csv", rows_read=m + 1, rows_skipped=1),
                          spec=spec, faiss_index=build_faiss(arrays.embedding, spec))
    return arrays, manifest


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_round_trip(tmp_path, kind):
    arrays, manifest = make_bank(tmp_path / "bank", spec=choose_spec(40, 6, kind))
    bank = load_bank(tmp_path / "bank", bundle_digest="d" * 64, embedding_dim=6)
    assert len(bank) == 40 and bank.manifest == manifest
    assert bank.manifest.index.kind == kind
    np.testing.assert_array_equal(bank.arrays.embedding, arrays.embedding)
    np.testing.assert_array_equal(bank.arrays.label, arrays.label)
    assert bank.metadata[0] == {"text": "doc 0", "n": 0} and bank.metadata[39] == {"text": "doc 39", "n": 39}
    np.testing.assert_allclose(bank.projection, bank.manifest.projection.apply(arrays.embedding), atol=1e-5)
    # the loaded FAISS index answers for the same atoms; the describe() of a row is its stored data
    assert bank.index.spec.kind == kind and bank.precision == "fp32"  # a manifest without precision: fp32
    rows, distance = bank.index.nearest(arrays.embedding[:5], 1)
    np.testing.assert_array_equal(rows[:, 0], np.arange(5))
    assert np.allclose(distance, 0, atol=1e-6)
    assert bank.describe(3)["metadata"] == {"text": "doc 3", "n": 3} and bank.describe(3)["id"] == arrays.id[3].item()
    bank.close()


def test_string_ids_survive(tmp_path):
    ids = np.asarray([f"doc-{i}" for i in range(40)])
    make_bank(tmp_path / "bank", ids=ids)
    assert load_bank(tmp_path / "bank").arrays.id.tolist() == ids.tolist()


def test_bank_of_another_bundle_is_refused(tmp_path):
    make_bank(tmp_path / "bank", digest="sha256:" + "a" * 64)
    with pytest.raises(BankError, match=r"built with bundle b 1 \(digest sha256:aaaaaaaaaaaa\), not the served bundle"):
        load_bank(tmp_path / "bank", bundle_digest="sha256:" + "b" * 64)


def test_changed_file_and_missing_manifest_are_refused(tmp_path):
    make_bank(tmp_path / "bank")
    with open(tmp_path / "bank" / "metadata.jsonl", "ab") as handle:
        handle.write(b"{}\n")
    with pytest.raises(BankError, match=r"metadata.jsonl: checksum mismatch"):
        load_bank(tmp_path / "bank")
    (tmp_path / "bank" / "manifest.json").unlink()
    with pytest.raises(BankError, match="manifest.json: missing file"):
        load_bank(tmp_path / "bank")
    with pytest.raises(BankError, match="bank folder does not exist"):
        load_bank(tmp_path / "nowhere")


def test_wrong_dimension_and_schema_are_refused(tmp_path):
    make_bank(tmp_path / "bank")
    with pytest.raises(BankError, match="embedding_dim 6, the bundle's is 8"):
        load_bank(tmp_path / "bank", embedding_dim=8)
    path = tmp_path / "bank" / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "schema_version": 99}))
    with pytest.raises(BankError, match="schema_version 99 is not supported"):
        load_bank(tmp_path / "bank")


def test_projection_keeps_the_main_spread():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 5)) * np.array([10.0, 3.0, 0.1, 0.1, 0.1])  # spread along axes 0 and 1
    projection = fit_projection(x)
    xy = projection.apply(x)
    assert xy.shape == (500, 2)
    assert np.abs(np.asarray(projection.axes)[:, 2:]).max() < 0.05
    assert xy[:, 0].std() == pytest.approx(10.0, rel=0.15) and xy[:, 1].std() == pytest.approx(3.0, rel=0.15)
