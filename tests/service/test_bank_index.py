"""`atomize index`: a corpus atomized with a bundle into a bank, like the service would atomize it;
bad rows refused or skipped, an interrupted run resumed, the same run on a local Ray instance."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from indexing import indexer
from indexing.atomizer import Atomizer
from contract.bank import load_bank
from indexing.corpus import CorpusError
from indexing.indexer import index_corpus
from indexing.shards import IndexOptions
from training.cli import app

runner = CliRunner()


def write_csv(path, texts, labels=None, extra=None):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["doc", "text", "label", "source"])
        for i, text in enumerate(texts):
            writer.writerow([f"doc-{i}", text, "" if labels is None else labels[i], extra or f"src{i % 3}"])
    return path


@pytest.fixture
def corpus(tmp_path, text_case):
    texts = text_case.train_inputs[:30]
    return write_csv(tmp_path / "docs.csv", texts, labels=["a" if i % 2 else "b" for i in range(30)]), texts


def test_cli_builds_a_bank_that_matches_the_model(tmp_path, text_case, corpus):
    path, texts = corpus
    out = tmp_path / "bank"
    result = runner.invoke(app, ["index", "--bundle", str(text_case.path), "--input", str(path), "--out", str(out),
                                 "--id-column", "doc", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "30 atoms, index flat" in result.output
    bank = load_bank(out)
    assert bank.manifest.count == 30 and bank.manifest.label_names == ["a", "b"]
    assert bank.manifest.built_with.name == text_case.bundle.manifest.name
    assert bank.arrays.id.tolist() == [f"doc-{i}" for i in range(30)]
    assert bank.metadata[4] == {"text": texts[4], "source": "src1"}
    assert not (out / "shards").exists()
    # the atoms are what the model gives for the same rows (ONNX Runtime, one row at a time)
    reference = text_case.reference(list(range(30)))
    np.testing.assert_allclose(bank.arrays.embedding, np.stack(reference["embedding"]), atol=1e-5)
    radius_col = text_case.bundle.manifest.composition_fields.index("radius")
    np.testing.assert_allclose(bank.arrays.radius, np.stack(reference["composition"])[:, radius_col], atol=1e-5)


def test_bad_row_is_named_or_skipped(tmp_path, text_case):
    path = write_csv(tmp_path / "docs.csv", ["a1 b1", "", "a2"])
    result = runner.invoke(app, ["index", "--bundle", str(text_case.path), "--input", str(path),
                                 "--out", str(tmp_path / "bank"), "--no-progress"])
    assert result.exit_code == 2
    assert "docs.csv: row 2: column 'text' is empty (pass --skip-bad-rows" in result.output
    assert not (tmp_path / "bank" / "manifest.json").exists()
    result = runner.invoke(app, ["index", "--bundle", str(text_case.path), "--input", str(path),
                                 "--out", str(tmp_path / "bank"), "--skip-bad-rows", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "1 bad rows skipped" in result.output
    source = load_bank(tmp_path / "bank").manifest.source
    assert (source.rows_read, source.rows_skipped) == (3, 1)


def test_interrupted_run_resumes_without_redoing_shards(tmp_path, text_case, corpus, monkeypatch):
    path, _ = corpus
    options = IndexOptions(bundle=text_case.path, input=path, out=tmp_path / "bank", shard_rows=8, progress=False)
    calls = []
    real = Atomizer.atomize_windows

    def failing_after_two(self, values, long="truncate"):
        if len(calls) == 2:
            raise KeyboardInterrupt  # what a user's Ctrl-C does mid-run
        calls.append(len(values))
        return real(self, values, long)

    monkeypatch.setattr(Atomizer, "atomize_windows", failing_after_two)
    with pytest.raises(KeyboardInterrupt):
        index_corpus(options)
    assert sorted(p.name for p in (tmp_path / "bank" / "shards").glob("0*.npz")) == ["00000.npz", "00001.npz"]
    calls.clear()
    monkeypatch.setattr(Atomizer, "atomize_windows",
                        lambda self, values, long="truncate": (calls.append(len(values)), real(self, values, long))[1])
    manifest = index_corpus(options)
    assert calls == [8, 6]  # shards 2 and 3 only: 30 rows in shards of 8
    whole = index_corpus(IndexOptions(bundle=text_case.path, input=path, out=tmp_path / "whole", progress=False))
    assert manifest.files["atoms.npz"] == whole.files["atoms.npz"] or np.allclose(
        load_bank(tmp_path / "bank").arrays.embedding, load_bank(tmp_path / "whole").arrays.embedding, atol=1e-6)


def test_changed_corpus_starts_over(tmp_path, text_case, corpus):
    path, texts = corpus
    out = tmp_path / "bank"
    shards = indexer.prepare_shards(out, {"input_sha256": "old"})
    (shards / "00000.npz").write_bytes(b"stale")
    index_corpus(IndexOptions(bundle=text_case.path, input=path, out=out, progress=False))
    assert load_bank(out).manifest.count == len(texts)


def test_numeric_bundle_indexes_jsonl_arrays(tmp_path, numeric_case):
    path = tmp_path / "images.jsonl"
    rows = numeric_case.train_inputs[:12]
    path.write_text("".join(json.dumps({"values": image, "id": i, "label": "x"}) + "\n" for i, image in enumerate(rows)))
    index_corpus(IndexOptions(bundle=numeric_case.path, input=path, out=tmp_path / "bank", progress=False))
    bank = load_bank(tmp_path / "bank")
    reference = numeric_case.reference(list(range(12)))
    np.testing.assert_allclose(bank.arrays.embedding, np.stack(reference["embedding"]), atol=1e-5)
    assert bank.arrays.id.tolist() == list(range(12)) and bank.metadata[0] == {}


def test_text_given_to_a_numeric_model_is_a_bad_row(tmp_path, numeric_case):
    path = write_csv(tmp_path / "docs.csv", ["hello"])
    with pytest.raises(CorpusError, match="row 1: the value is a string; model .* takes arrays of numbers"):
        index_corpus(IndexOptions(bundle=numeric_case.path, input=path, out=tmp_path / "bank", progress=False))


def test_ray_local_instance_gives_the_same_bank(tmp_path, text_case, corpus):
    pytest.importorskip("ray")
    path, _ = corpus
    local = index_corpus(IndexOptions(bundle=text_case.path, input=path, out=tmp_path / "local", progress=False))
    on_ray = index_corpus(IndexOptions(bundle=text_case.path, input=path, out=tmp_path / "ray", shard_rows=16,
                                     batch_size=8, ray=True, ray_workers=1, progress=False))
    assert on_ray.count == local.count == 30
    a, b = load_bank(tmp_path / "local"), load_bank(tmp_path / "ray")
    np.testing.assert_allclose(a.arrays.embedding, b.arrays.embedding, atol=1e-5)
    assert a.arrays.id.tolist() == b.arrays.id.tolist()
    assert [a.metadata[i] for i in range(30)] == [b.metadata[i] for i in range(30)]


@pytest.fixture
def long_corpus(tmp_path, text_case):
    """Two short rows and one document of several model windows."""
    limit = text_case.bundle.manifest.input.max_components
    document = " ".join(text_case.train_inputs[:12])
    assert len(document.split()) > 2 * limit
    texts = [text_case.train_inputs[0], document, text_case.train_inputs[1]]
    return write_csv(tmp_path / "docs.csv", texts), texts


def served(text_case, texts, chunk):
    from service.runtime import Runtime

    runtime = Runtime(text_case.bundle, device="cpu")
    if not chunk:
        items = runtime.prepare(texts)
        return [runtime.one(item, result) for item, result in zip(items, runtime.run(items))]
    out = []
    for group in runtime.prepare_windows(texts, max_chunks=64):
        out.append(runtime.pool(list(zip(group, runtime.run(group)))))
    return out


@pytest.mark.parametrize("long", ["pool", "truncate"])
def test_a_long_document_is_one_atom_as_the_service_answers_it(tmp_path, text_case, long_corpus, long):
    path, texts = long_corpus
    manifest = index_corpus(IndexOptions(bundle=text_case.path, input=path, out=tmp_path / "bank", long=long,
                                         id_column="doc", progress=False))
    bank = load_bank(tmp_path / "bank")
    assert manifest.count == 3 and bank.arrays.id.tolist() == ["doc-0", "doc-1", "doc-2"]
    expected = served(text_case, texts, chunk=long == "pool")
    np.testing.assert_allclose(bank.arrays.embedding, np.stack([r.embedding for r in expected]), atol=1e-5)
    if long == "pool":  # read whole: not the truncated atom
        (cut,) = served(text_case, texts[1:2], chunk=False)
        assert np.abs(bank.arrays.embedding[1] - cut.embedding).max() > 1e-3


def test_a_long_document_can_be_one_atom_per_window(tmp_path, text_case, long_corpus):
    path, texts = long_corpus
    result = runner.invoke(app, ["index", "--bundle", str(text_case.path), "--input", str(path), "--out",
                                 str(tmp_path / "bank"), "--id-column", "doc", "--long", "chunks", "--no-progress"])
    assert result.exit_code == 0, result.output
    bank = load_bank(tmp_path / "bank")
    ids = bank.arrays.id.tolist()
    windows = [i for i in ids if i.startswith("doc-1#")]
    assert ids == ["doc-0#0", *windows, "doc-2#0"] and len(windows) >= 3
    assert windows == [f"doc-1#{j}" for j in range(len(windows))]
    spans = [bank.metadata[1 + j] for j in range(len(windows))]
    assert all(m["document"] == "doc-1" and m["chunk"] == j for j, m in enumerate(spans))
    assert spans[0]["start"] == 0 and spans[-1]["end"] == len(texts[1])
    # each window's atom is the window's text atomized alone
    (alone,) = [served(text_case, [texts[1][m["start"] : m["end"]] for m in spans], chunk=False)]
    np.testing.assert_allclose(bank.arrays.embedding[1 : 1 + len(windows)], np.stack([r.embedding for r in alone]),
                               atol=1e-5)
    refused = runner.invoke(app, ["index", "--bundle", str(text_case.path), "--input", str(path), "--out",
                                  str(tmp_path / "ray"), "--long", "chunks", "--ray", "--no-progress"])
    assert refused.exit_code != 0 and "--long chunks" in refused.output
