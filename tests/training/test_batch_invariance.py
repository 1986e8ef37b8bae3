"""An input's answer does not depend on what shares its batch (issue 22), on every precision a
bundle ships: alone, inside a batch of 16 mixed-length inputs, and inside that batch reordered,
the embedding agrees within 1e-5 and the roles and neighbour ids are the same. The tiny random
BERT of tests/training/conftest.py stands in for MiniLM."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from contract.bundle import INT8_FILE, Manifest, checksum_tree, load_bundle
from service.runtime import Runtime
from training.checkpoint import load_run_dataset
from training.precision import batch_invariance, cpu_session, model_feeds, write_int8_dynamic

TOLERANCE = 1e-5
NAMES = ("input_ids", "attention_mask")


@pytest.fixture(scope="module")
def shipped_bundle(backbone_run, tmp_path_factory):
    from training.export import export_bundle

    return export_bundle(backbone_run, tmp_path_factory.mktemp("bundles") / "invariance", int8=True, fp16=True, report=False)


@pytest.fixture(scope="module")
def texts(backbone_run):
    """16 training texts from short to long (different lengths, so every batch is padded)."""
    train = load_run_dataset(backbone_run).train
    lengths = train.mask.sum(1)
    order = np.argsort(lengths, kind="stable")
    rows = order[np.linspace(0, len(order) - 1, 16).round().astype(int)]
    assert len(set(lengths[rows].tolist())) > 4
    return [train.texts[row] for row in rows]


def assert_batch_invariant(runtime: Runtime, texts: list[str]) -> None:
    items = runtime.prepare(texts, neighbors=5)
    alone = [runtime.run([item])[0] for item in items]
    order = np.random.default_rng(0).permutation(len(items))
    for batch_order in (np.arange(len(items)), order):
        together = runtime.run([items[i] for i in batch_order])
        for position, index in enumerate(batch_order):
            got, expected = together[position], alone[index]
            np.testing.assert_allclose(got.embedding, expected.embedding, atol=TOLERANCE, rtol=0)
            # counts and mass reach ~50: within 1e-5 or one part in a million
            np.testing.assert_allclose(got.composition, expected.composition, atol=TOLERANCE, rtol=1e-6)
            np.testing.assert_array_equal(got.roles.argmax(-1), expected.roles.argmax(-1))
            np.testing.assert_array_equal(got.neighbors.rows, expected.neighbors.rows)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_every_shipped_precision_gives_an_input_the_same_answer_in_any_batch(shipped_bundle, texts, precision):
    bundle = load_bundle(shipped_bundle)
    assert precision in bundle.precisions()
    runtime = Runtime(bundle, device="cpu", precision=precision)
    assert runtime.precision == precision and not runtime.per_input  # batched for real
    assert_batch_invariant(runtime, texts)


def test_the_int8_copy_is_static_and_its_measured_invariance_is_recorded(shipped_bundle):
    int8 = load_bundle(shipped_bundle).manifest.precisions["int8"]
    assert int8["scheme"] == "static"
    assert 0.0 <= int8["batch_max_abs_diff"] <= TOLERANCE
    assert int8["batch_items_checked"] >= 16
    assert 0.9 < int8["cosine_mean"] <= 1.0 + 1e-6


def test_batch_invariance_measures_dynamic_int8_as_batch_dependent(shipped_bundle, backbone_run, tmp_path):
    """The measurement that guards the export can fail: dynamic quantization computes activation
    scales over the batch, so the same item moves with its neighbours."""
    test = load_run_dataset(backbone_run).test
    dynamic = tmp_path / "dynamic.onnx"
    write_int8_dynamic(shipped_bundle / "encoder.onnx", dynamic)
    assert batch_invariance(dynamic, test, NAMES)["embedding"] > TOLERANCE
    assert batch_invariance(shipped_bundle / INT8_FILE, test, NAMES)["embedding"] <= TOLERANCE
    # and the static copy is a real int8 model, not fp32 under another name
    rows = np.arange(8)
    session, fp32 = cpu_session(shipped_bundle / INT8_FILE), cpu_session(shipped_bundle / "encoder.onnx")
    feeds = model_feeds(NAMES, test, rows)
    assert np.abs(session.run(["embedding"], feeds)[0] - fp32.run(["embedding"], feeds)[0]).max() > TOLERANCE


def test_an_older_bundle_with_dynamic_int8_is_served_one_input_per_call(shipped_bundle, texts, tmp_path):
    """Bundles exported before static int8 keep working and get batch-invariant answers."""
    old = tmp_path / "old"
    shutil.copytree(shipped_bundle, old)
    write_int8_dynamic(old / "encoder.onnx", old / INT8_FILE)
    manifest = Manifest.model_validate_json((old / "manifest.json").read_text())
    precisions = {"int8": {k: v for k, v in manifest.precisions["int8"].items() if k not in ("scheme", "batch_max_abs_diff")}}
    manifest.model_copy(update={"precisions": precisions, "files": checksum_tree(old)}).write(old)
    runtime = Runtime(load_bundle(old), device="cpu")
    assert runtime.precision == "int8" and runtime.per_input
    assert_batch_invariant(runtime, texts)


def test_a_static_copy_whose_export_check_found_movement_is_served_one_input_per_call(shipped_bundle, tmp_path):
    """The export records what its batch check measured; the service trusts the record."""
    moved = tmp_path / "moved"
    shutil.copytree(shipped_bundle, moved)
    manifest = Manifest.model_validate_json((moved / "manifest.json").read_text())
    precisions = {"int8": {**manifest.precisions["int8"], "batch_max_abs_diff": 3e-3}}
    manifest.model_copy(update={"precisions": precisions, "files": checksum_tree(moved)}).write(moved)
    bundle = load_bundle(moved)
    assert not bundle.batch_invariant("int8") and bundle.batch_invariant("fp32")
    assert Runtime(bundle, device="cpu").per_input
    assert not Runtime(load_bundle(shipped_bundle), device="cpu").per_input


def test_a_bank_atom_and_a_served_query_of_the_same_text_are_the_same(shipped_bundle, texts, tmp_path):
    """`atomize index` runs the copy the service runs on the same device (int8 on a CPU here) and
    says so in the bank's manifest; an fp32 bank of the same texts is measurably elsewhere."""
    import csv

    from contract.bank import load_bank
    from indexing.indexer import index_corpus
    from indexing.shards import IndexOptions

    corpus = tmp_path / "docs.csv"
    with open(corpus, "w", newline="") as handle:
        csv.writer(handle).writerows([["text"], *[[text] for text in texts]])
    banks = {}
    for precision in ("auto", "fp32"):
        out = tmp_path / precision
        index_corpus(IndexOptions(bundle=shipped_bundle, input=corpus, out=out, device="cpu", precision=precision,
                                  batch_size=5, progress=False))
        banks[precision] = load_bank(out)
    runtime = Runtime(load_bundle(shipped_bundle), device="cpu")
    served = np.stack([r.embedding for r in runtime.run(runtime.prepare(texts))])
    assert runtime.precision == "int8" and banks["auto"].precision == "int8" and banks["fp32"].precision == "fp32"
    np.testing.assert_allclose(banks["auto"].arrays.embedding, served, atol=TOLERANCE, rtol=0)
    assert np.abs(banks["fp32"].arrays.embedding - served).max() > 10 * TOLERANCE
