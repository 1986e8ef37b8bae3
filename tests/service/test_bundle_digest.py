"""Bundle pinning: the digest over the canonical manifest, the pin, and what the files themselves decide."""

from __future__ import annotations

import json
import shutil

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from service.app import create_app
from contract.bundle import BundleError, bundle_digest, load_bundle, sha256_file


@pytest.fixture
def copy(text_case, tmp_path):
    path = tmp_path / "bundle"
    shutil.copytree(text_case.path, path)
    return path


def edit_manifest(bundle, change) -> None:
    path = bundle / "manifest.json"
    raw = json.loads(path.read_text())
    change(raw)
    path.write_text(json.dumps(raw, indent=2))


def test_the_digest_is_the_sha256_of_the_canonical_manifest(copy):
    digest = bundle_digest(copy)
    assert digest.startswith("sha256:") and len(digest) == len("sha256:") + 64
    assert load_bundle(copy).digest == digest
    raw = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps(raw, indent=7, sort_keys=False))  # same content, other bytes
    assert bundle_digest(copy) == digest
    edit_manifest(copy, lambda raw: raw["potential"].update(well_depth=raw["potential"]["well_depth"] * 2))
    assert bundle_digest(copy) != digest


def test_a_pinned_bundle_refuses_any_change(copy):
    digest = bundle_digest(copy)
    assert load_bundle(copy, digest=digest).digest == digest
    # The potential cannot be derived from any file: without a pin a changed well depth loads...
    edit_manifest(copy, lambda raw: raw["potential"].update(well_depth=raw["potential"]["well_depth"] * 2))
    assert load_bundle(copy).manifest.potential.well_depth > 0
    # ...and the pin refuses it.
    with pytest.raises(BundleError, match=f"bundle digest sha256:[0-9a-f]{{64}} is not the pinned {digest}"):
        load_bundle(copy, digest=digest)


def test_a_pinned_bundle_refuses_a_changed_byte_in_any_file_and_an_added_file(text_case, tmp_path):
    digest = bundle_digest(text_case.path)
    changed = tmp_path / "changed"
    shutil.copytree(text_case.path, changed)
    report = next(path for path in (changed / "report").iterdir() if path.is_file())
    report.write_bytes(report.read_bytes() + b" ")
    with pytest.raises(BundleError, match="checksum mismatch"):
        load_bundle(changed, digest=digest)
    added = tmp_path / "added"
    shutil.copytree(text_case.path, added)
    (added / "extra.txt").write_text("hello")
    assert load_bundle(added).digest == digest  # unpinned: an unlisted file is ignored
    with pytest.raises(BundleError, match="extra.txt: file is not listed in the manifest of the pinned bundle"):
        load_bundle(added, digest=digest)


@pytest.mark.parametrize(
    "field, change, words",
    [
        ("vocab_size", lambda raw: raw["input"].update(vocab_size=raw["input"]["vocab_size"] + 1), "tokenizer.json has"),
        ("max_components", lambda raw: raw["input"].update(max_components=raw["input"]["max_components"] * 2),
         "tokenizer.json truncates at"),
        ("embedding_dim", lambda raw: raw.update(embedding_dim=raw["embedding_dim"] * 2),
         r"embedding has shape \(\d+, 16\), expected \(M, 32\)"),
        ("embedding_dim in both", lambda raw: [raw.update(embedding_dim=32), raw["onnx_outputs"][0].update(shape=["batch", 32])],
         r"embedding has shape|has shape \['batch', 16\], manifest says"),
        ("radius_range", lambda raw: raw.update(radius_range=[raw["radius_range"][1] * 2, raw["radius_range"][1] * 3]),
         "the bank's radii span"),
    ],
)
def test_values_the_files_decide_must_agree_with_the_manifest(copy, field, change, words):
    edit_manifest(copy, change)
    with pytest.raises(BundleError, match=words) as caught:
        load_bundle(copy)
    assert str(caught.value).startswith(str(copy))


def test_the_app_pins_shows_and_labels_the_digest(text_case, copy):
    digest = bundle_digest(text_case.path)
    with TestClient(create_app(text_case.settings(bundle_digest=digest.removeprefix("sha256:")))) as client:
        assert client.get("/v1/model").json()["digest"] == digest
        assert f'digest="{digest}"' in client.get("/metrics").text
    edit_manifest(copy, lambda raw: raw["potential"].update(well_depth=2.0))
    with pytest.raises(BundleError, match="is not the pinned"):
        with TestClient(create_app(text_case.settings(bundle=copy, bundle_digest=digest))):
            pass


def test_atomize_export_prints_the_digest(text_run, tmp_path):
    from training.cli import app

    result = CliRunner().invoke(app, ["export", str(text_run), "--out", str(tmp_path / "bundle")])
    assert result.exit_code == 0, result.output
    assert f"digest: {bundle_digest(tmp_path / 'bundle')}" in result.output
    files = json.loads((tmp_path / "bundle" / "manifest.json").read_text())["files"]
    assert files["encoder.onnx"] == sha256_file(tmp_path / "bundle" / "encoder.onnx")  # the manifest lists every file
