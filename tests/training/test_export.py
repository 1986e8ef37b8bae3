"""Export round trip (both modalities) and every way the bundle loader must refuse a bundle."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from contract.projection import PROJECTION_FILE, read_projection
from contract.bundle import BundleError, load_bundle, sha256_file
from training.checkpoint import load_model, load_run_dataset
from training.export import OUTPUT_NAMES, OnnxEncoder, input_names


def run_onnx(bundle_dir, modality, inputs, mask):
    session = ort.InferenceSession(str(bundle_dir / "encoder.onnx"), providers=["CPUExecutionProvider"])
    names = input_names(modality)
    return session.run(list(OUTPUT_NAMES), {names[0]: inputs, names[1]: mask})


@pytest.mark.parametrize("kind", ["text", "numeric"])
def test_onnx_matches_torch_at_several_shapes(kind, request):
    run_dir = request.getfixturevalue(f"{kind}_run")
    bundle_dir = request.getfixturevalue(f"{kind}_bundle")
    model = load_model(run_dir)
    data = load_run_dataset(run_dir)
    split = data.test
    dtype = np.int64 if kind == "text" else np.float32
    lengths = split.mask.sum(1)
    shapes = {
        "batch 1, no padding": [0],
        "batch 5, mixed lengths": list(np.argsort(lengths)[[0, 5, 20, 40, -1]]),
        "batch 17": list(range(17)),
    }
    for label, rows in shapes.items():
        longest = int(lengths[rows].max())
        inputs = split.inputs[rows, :longest].astype(dtype)
        mask = split.mask[rows, :longest].astype(np.int64)
        if kind == "numeric" and len(rows) > 1:  # images have no padding of their own: make some
            mask[np.arange(len(rows)), np.linspace(1, longest - 1, len(rows)).astype(int)] = 0
            mask = np.minimum.accumulate(mask, axis=1)  # zeros from the cut to the end of each row
            inputs = (inputs + (mask == 0)[..., None] * 5.0).astype(np.float32)
        got = run_onnx(bundle_dir, kind, inputs, mask)
        with torch.no_grad():
            expected = OnnxEncoder(model)(torch.as_tensor(inputs), torch.as_tensor(mask))
        for name, g, e in zip(OUTPUT_NAMES, got, expected):
            assert g.shape == tuple(e.shape), (label, name)
            assert np.abs(g - e.numpy()).max() <= 1e-4, (label, name)


@pytest.mark.parametrize("kind", ["text", "numeric"])
def test_manifest_describes_the_bundle(kind, request):
    bundle = load_bundle(request.getfixturevalue(f"{kind}_bundle"))
    manifest = bundle.manifest
    modality = "text" if kind == "text" else "numeric"
    assert manifest.input.modality == modality
    assert [spec.name for spec in manifest.onnx_inputs] == list(input_names(modality))
    assert [spec.name for spec in manifest.onnx_outputs] == list(OUTPUT_NAMES)
    assert manifest.embedding_dim == 16 and manifest.role_names == ["electron", "proton", "neutron"]
    assert manifest.potential.kind == "morse" and manifest.training.seed == 0
    assert ("tokenizer.json" in manifest.files) == (kind == "text")
    for name, digest in manifest.files.items():
        assert sha256_file(bundle.path / name) == digest
    if kind == "text":
        assert {"report/report.html", "report/atoms.png", "report/roles.png"} <= set(manifest.files)
    else:
        assert manifest.input.preprocess == {
            "kind": "patches", "image_shape": [8, 8], "patch_shape": [2, 2], "value_range": [0.0, 16.0]}


@pytest.mark.parametrize("kind", ["text", "numeric"])
def test_bank_rows_are_the_models_embeddings_of_the_training_items(kind, request):
    run_dir = request.getfixturevalue(f"{kind}_run")
    bundle = load_bundle(request.getfixturevalue(f"{kind}_bundle"))
    train = load_run_dataset(run_dir).train
    rows = [0, 7, len(train.labels) - 1]
    dtype = np.int64 if kind == "text" else np.float32
    embedding, _, composition = run_onnx(bundle.path, kind, train.inputs[rows].astype(dtype), train.mask[rows].astype(np.int64))
    assert np.abs(bundle.atoms.embedding[rows] - embedding).max() <= 1e-4
    assert np.abs(bundle.atoms.radius[rows] - composition[:, 5]).max() <= 1e-4
    assert np.abs(bundle.atoms.charge[rows] - composition[:, 4]).max() <= 1e-4
    assert bundle.atoms.id.tolist() == list(range(len(train.labels)))
    assert np.array_equal(bundle.atoms.label, train.labels)
    with np.load(bundle.path / "atoms.npz", allow_pickle=False) as data:
        assert set(data.files) == {"embedding", "radius", "charge", "id", "label"}


@pytest.mark.parametrize("kind", ["text", "numeric"])
def test_bundle_stores_the_explorer_map(kind, request):
    """projection.npz: the bank's top two principal axes and every atom's place on them."""
    bundle = load_bundle(request.getfixturevalue(f"{kind}_bundle"))
    assert PROJECTION_FILE in bundle.manifest.files
    z = bundle.atoms.embedding.astype(np.float64)
    projection, xy = read_projection(bundle.path / PROJECTION_FILE, len(z), z.shape[1])
    np.testing.assert_allclose(xy, projection.apply(z), atol=1e-5)
    axes = np.asarray(projection.axes)
    np.testing.assert_allclose(axes @ axes.T, np.eye(2), atol=1e-5)  # orthonormal: the map never stretches
    centred = z - z.mean(axis=0)
    top = np.linalg.eigvalsh(centred.T @ centred)[-2:].sum()  # variance along the best 2D plane
    np.testing.assert_allclose(((centred @ axes.T) ** 2).sum(), top, rtol=1e-3)
    if kind == "text":
        stats = json.loads((bundle.path / "report" / "stats.json").read_text())
        assert "report/stats.json" in bundle.manifest.files and stats["summary"]["atoms in bank"] == len(z)


# ---- the loader refuses broken bundles with one line naming the file and the problem ----


@pytest.fixture
def broken(numeric_bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(numeric_bundle, copy)
    return copy


def expect_refusal(bundle_dir, file_name: str, problem: str) -> None:
    with pytest.raises(BundleError) as info:
        load_bundle(bundle_dir)
    message = str(info.value)
    assert "\n" not in message
    assert file_name in message and problem in message, message


def test_loader_refuses_a_missing_file(broken):
    (broken / "atoms.npz").unlink()
    expect_refusal(broken, "atoms.npz", "missing file")


def test_loader_refuses_a_tampered_file(broken):
    with np.load(broken / "atoms.npz") as data:
        arrays = dict(data)
    arrays["embedding"][0] += 1.0
    np.savez(broken / "atoms.npz", **arrays)
    expect_refusal(broken, "atoms.npz", "checksum mismatch")


def test_loader_refuses_another_schema_version(broken):
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (broken / "manifest.json").write_text(json.dumps(manifest))
    expect_refusal(broken, "manifest.json", "schema_version 99 is not supported")


def test_loader_refuses_an_onnx_model_that_disagrees_with_the_manifest(broken):
    model = onnx.load(str(broken / "encoder.onnx"))
    model.graph.output[0].name = "nucleus"  # rename the embedding output
    for node in model.graph.node:
        node.output[:] = ["nucleus" if name == "embedding" else name for name in node.output]
        node.input[:] = ["nucleus" if name == "embedding" else name for name in node.input]  # the radius reads it
    onnx.save(model, str(broken / "encoder.onnx"))
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["files"]["encoder.onnx"] = sha256_file(broken / "encoder.onnx")  # a consistent checksum
    (broken / "manifest.json").write_text(json.dumps(manifest))
    expect_refusal(broken, "encoder.onnx", "disagree with the manifest")


def test_loader_refuses_a_missing_manifest_and_a_missing_folder(broken, tmp_path):
    (broken / "manifest.json").unlink()
    expect_refusal(broken, "manifest.json", "missing file")
    expect_refusal(tmp_path / "nowhere", "nowhere", "does not exist")
