"""A pretrained Hugging Face backbone under the atom head: loading, freezing, special tokens,
cached states, export with int8, and serving what it exported. A tiny random BERT stands in for
MiniLM (tests/training/conftest.py: make_tiny_backbone)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load_file

from model import AtomConfig, AtomModel
from service.app import create_app
from contract.bundle import load_bundle
from service.config import Settings
from training.backbone import BackboneError, backbone_tokenizer, load_pretrained_weights, resolve_backbone
from training.checkpoint import load_json, load_model, load_run_dataset
from training.cli import main as cli_main
from training.data import DatasetError, load_dataset
from training.export import export_bundle
from training.train import backbone_states, predict


@pytest.fixture(scope="module")
def backbone_bundle(backbone_run, tmp_path_factory):
    return export_bundle(backbone_run, tmp_path_factory.mktemp("bundles") / "tweets-backbone", int8=True, report=False)


def test_resolve_backbone_names_what_is_missing(tmp_path):
    with pytest.raises(BackboneError, match="is not a folder"):
        resolve_backbone(str(tmp_path / "nope"))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(BackboneError, match=r"lacks tokenizer.json, \*.safetensors weights"):
        resolve_backbone(str(tmp_path))


def test_cli_refuses_a_missing_backbone_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["train", "--dataset", "tweets", "--out", str(tmp_path / "run"), "--backbone", str(tmp_path / "none")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a folder" in err[0]


def test_numeric_dataset_refuses_a_text_backbone(tiny_backbone):
    with pytest.raises(DatasetError, match="only tweets and csv"):
        load_dataset("digits", tokenizer=backbone_tokenizer(tiny_backbone, 64))


def test_run_carries_the_backbone_config_and_its_tokenizer(backbone_run, tiny_backbone):
    config = AtomConfig.from_dict(load_json(backbone_run / "config.json"))
    hf = json.loads((tiny_backbone / "config.json").read_text())
    assert config.backbone_config["hidden_size"] == hf["hidden_size"] == config.d_model == config.embedding_dim
    cls, sep = (backbone_tokenizer(tiny_backbone, 64).token_to_id(t) for t in ("[CLS]", "[SEP]"))
    assert config.special_token_ids == (cls, sep)
    data = load_run_dataset(backbone_run)
    first = data.train.inputs[0][data.train.mask[0]]
    assert first[0] == cls and first[-1] == sep  # the backbone sees the text as it was pretrained


def test_pretrained_weights_are_loaded(tiny_backbone):
    config = AtomConfig(backbone="tiny", backbone_config=json.loads((tiny_backbone / "config.json").read_text()),
                        d_model=32, embedding_dim=32, num_classes=3)
    model = AtomModel(config)
    saved = load_file(str(tiny_backbone / "model.safetensors"))
    key = "encoder.layer.1.attention.self.query.weight"
    assert not torch.equal(model.encoder.model.state_dict()[key], saved[key])  # random before
    load_pretrained_weights(model.encoder, tiny_backbone)
    for name, value in model.encoder.model.state_dict().items():
        assert torch.equal(value, saved[name]), name


@pytest.mark.parametrize("layers, trained", [(-1, {0, 1, "embeddings"}), (1, {1}), (0, set())])
def test_train_layers_freezes_from_the_bottom(tiny_backbone, layers, trained):
    hf = json.loads((tiny_backbone / "config.json").read_text())
    model = AtomModel(AtomConfig(backbone_config=hf, backbone_train_layers=layers, d_model=32, embedding_dim=8))
    encoder = model.encoder
    learning = {i for i, layer in enumerate(encoder.layers) if all(p.requires_grad for p in layer.parameters())}
    if all(p.requires_grad for p in encoder.model.embeddings.parameters()):
        learning.add("embeddings")
    assert learning == trained
    assert all(p.requires_grad for p in model.atom.parameters())  # the head always learns
    model.train()
    assert all(not m.training for m in encoder.frozen_modules())  # frozen parts compute the pretrained function
    assert encoder.frozen == (layers == 0)


def test_special_tokens_are_attended_but_are_no_components(backbone_run):
    model = load_model(backbone_run)
    data = load_run_dataset(backbone_run)
    inputs = torch.as_tensor(data.validation.inputs[:6])
    mask = torch.as_tensor(data.validation.mask[:6])
    with torch.no_grad():
        out = model(inputs, mask)
    specials = torch.isin(inputs, torch.tensor(model.config.special_token_ids)) & mask
    assert specials.sum(1).tolist() == [2] * 6
    assert out.roles[specials].abs().max() == 0.0
    real = (mask & ~specials).sum(1).float()
    torch.testing.assert_close(out.composition[:, :3].sum(1), real)  # E + Z + N counts real pieces only
    torch.testing.assert_close(out.roles[mask & ~specials].sum(-1), torch.ones(int(real.sum())))


@pytest.mark.parametrize("layers", [0, 1])
def test_cached_frozen_states_give_the_model_outputs(tiny_backbone, layers):
    """Frozen (0) or its top layer trained (1): the frozen part's states, computed once, then the
    trained top and the head give what the whole model gives."""
    hf = json.loads((tiny_backbone / "config.json").read_text())
    config = AtomConfig(backbone_config=hf, backbone_train_layers=layers, backbone_adapter_layers=1, d_model=32, n_heads=2,
                        embedding_dim=8, num_classes=3, special_token_ids=(300, 301))
    torch.manual_seed(0)
    model = AtomModel(config).eval()
    data = load_dataset("tweets", limit=60, tokenizer=backbone_tokenizer(tiny_backbone, 64))
    states = backbone_states(model, data.test, torch.device("cpu"))
    direct = predict(model, data.test, "text", torch.device("cpu"))
    cached = predict(model, data.test, "text", torch.device("cpu"), states=states)
    for key in ("embedding", "composition", "roles"):
        np.testing.assert_allclose(cached[key], direct[key], atol=2e-2)  # states are kept in fp16
    assert np.abs(cached["embedding"] - direct["embedding"]).max() > 0  # and really came from the cache


def test_top_layer_training_on_cached_states_moves_only_the_top_layer(tiny_backbone, tmp_path):
    """--train-layers 1: the lower layer's output is computed once, the top layer learns from it, the
    lower layer and the embeddings stay pretrained, and the saved model runs whole (as exported)."""
    from tests.conftest import tiny_options
    from training.train import train

    run = train(tiny_options("tweets", tmp_path / "run", backbone=str(tiny_backbone), model_overrides={}, epochs=1,
                             lr=1e-3, backbone_lr=1e-2, backbone_train_layers=1))
    model = load_model(run)
    assert model.encoder.frozen_depth == 1
    pretrained = load_file(next(tiny_backbone.glob("*.safetensors")))
    trained = model.encoder.model.state_dict()
    assert torch.equal(trained["encoder.layer.0.attention.self.query.weight"], pretrained["encoder.layer.0.attention.self.query.weight"])
    assert torch.equal(trained["embeddings.word_embeddings.weight"], pretrained["embeddings.word_embeddings.weight"])
    assert not torch.equal(trained["encoder.layer.1.attention.self.query.weight"], pretrained["encoder.layer.1.attention.self.query.weight"])
    data = load_run_dataset(run)
    states = backbone_states(model, data.validation, torch.device("cpu"))
    with torch.no_grad():  # the cached states are the lower layer's output, not the last one's
        x, m = torch.as_tensor(data.validation.inputs[:4]), torch.as_tensor(data.validation.mask[:4])
        lower = model.encoder.model(input_ids=x, attention_mask=m.long(), output_hidden_states=True).hidden_states[1]
    torch.testing.assert_close(states[:4].float()[m], lower[m], atol=1e-2, rtol=1e-2)
    whole = predict(model, data.validation, "text", torch.device("cpu"))
    cached = predict(model, data.validation, "text", torch.device("cpu"), states=states)
    np.testing.assert_allclose(cached["embedding"], whole["embedding"], atol=2e-2)
    # make bundle-tuned's path: the run exports whole (the export checks the ONNX file against
    # PyTorch itself), and the bundle's graph gives the trained model's embedding
    bundle = load_bundle(export_bundle(run, tmp_path / "bundle", report=False))
    session = ort.InferenceSession(str(bundle.onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(["embedding"], {"input_ids": x.numpy(), "attention_mask": m.long().numpy()})[0]
    np.testing.assert_allclose(got, whole["embedding"][:4], atol=1e-4)


def test_export_writes_a_measured_int8_copy(backbone_bundle):
    manifest = load_bundle(backbone_bundle).manifest
    assert manifest.training.backbone == "tiny-bert"
    assert len(manifest.input.special_token_ids) == 2
    assert {"encoder.onnx", "encoder.int8.onnx", "tokenizer.json"} <= set(manifest.files)
    int8 = manifest.precisions["int8"]
    assert 0.9 < int8["cosine_mean"] <= 1.0 + 1e-6 and int8["cosine_min"] <= int8["cosine_mean"]
    assert 0.0 <= int8["accuracy"] <= 1.0 and 0.0 <= int8["accuracy_fp32"] <= 1.0
    assert (backbone_bundle / "encoder.int8.onnx").stat().st_size < (backbone_bundle / "encoder.onnx").stat().st_size
    # the feed-forward down projections read GELU outputs (the erf form the TorchScript exporter
    # writes): the int8 copy keeps those fp32
    from training.precision import quantizable_matmuls

    weighted, after_gelu = quantizable_matmuls(backbone_bundle / "encoder.onnx")
    downs = [name for name in weighted if "/output/dense/" in name and "attention" not in name]
    assert downs and set(downs) <= set(after_gelu) and len(after_gelu) < len(weighted)
    # the graph as chosen by benchmarks/graph_variants.py, recorded with its parity
    assert manifest.graph["exporter"] == "torchscript" and manifest.graph["attention"] == "eager"
    assert manifest.graph["optimisation"] == "basic" and 0.0 <= manifest.graph["parity_max"] <= 1e-4
    # roles looked up per token id (parity above checks the lookup against the role MLP): the
    # role MLP's weights are not in the graph, a (vocab, 3) table is
    assert manifest.graph["roles"] == "table"
    graph = onnx.load(str(backbone_bundle / "encoder.onnx"))
    shapes = [tuple(t.dims) for t in graph.graph.initializer]
    assert (manifest.input.vocab_size, 3) in shapes and not any(name.startswith("atom.role") for name in
                                                                 (t.name for t in graph.graph.initializer))


@pytest.mark.parametrize("precision, expected_file", [("auto", "encoder.int8.onnx"), ("fp32", "encoder.onnx")])
def test_service_runs_the_copy_for_its_device_and_reports_real_tokens(backbone_bundle, precision, expected_file):
    settings = Settings(bundle=backbone_bundle, device="cpu", precision=precision)
    with TestClient(create_app(settings)) as client:
        model = client.get("/v1/model").json()
        runtime = model["runtime"]
        assert set(model["precisions"]) == {"int8"} and model["precisions"]["int8"]["cosine_mean"] > 0.9
        assert model["graph"]["exporter"] == "torchscript" and model["graph"]["parity_max"] <= 1e-4
        assert runtime["model_file"] == expected_file
        assert runtime["precision"] == {"encoder.int8.onnx": "int8", "encoder.onnx": "fp32"}[expected_file]
        body = client.post("/v1/atomize", json={"inputs": ["what a great day"], "include": ["components", "composition"]}).json()
        tokens = [c["token"] for c in body["results"][0]["components"]]
        assert "[CLS]" not in tokens and "[SEP]" not in tokens and len(tokens) >= 4
        assert body["usage"]["components"] == len(tokens)  # [CLS] / [SEP] are not counted
        composition = body["results"][0]["composition"]
        assert composition["electrons"] + composition["protons"] + composition["neutrons"] == pytest.approx(len(tokens), rel=1e-4)
        empty = client.post("/v1/atomize", json={"inputs": ["   "]})
        assert empty.status_code == 422  # [CLS] [SEP] alone is no atom


def test_service_refuses_a_precision_the_bundle_lacks(backbone_bundle):
    with pytest.raises(Exception, match="precision=fp16"):
        with TestClient(create_app(Settings(bundle=backbone_bundle, device="cpu", precision="fp16"))):
            pass


def test_the_backbones_own_limit_is_read_from_its_folder(tmp_path):
    from training.backbone import backbone_max_length

    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 512}))
    assert backbone_max_length(tmp_path) == 512  # nothing else said: the position table
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 1e30}))
    assert backbone_max_length(tmp_path) == 512  # Hugging Face's "no limit"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 384}))
    assert backbone_max_length(tmp_path) == 384
    (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 256}))
    assert backbone_max_length(tmp_path) == 256  # sentence-transformers' own, as all-MiniLM-L6-v2 has
    (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 4096}))
    assert backbone_max_length(tmp_path) == 512  # never past the positions


def test_a_backbone_bundle_reads_the_backbones_length_not_the_training_cut(backbone_bundle, backbone_run):
    bundle = load_bundle(backbone_bundle)
    spec = bundle.manifest.input
    assert load_run_dataset(backbone_run).max_components == 64  # training texts cut at 64
    assert spec.max_components == 128  # the tiny backbone's positions
    assert spec.chunk_overlap == 16
    assert json.loads((backbone_bundle / "tokenizer.json").read_text())["truncation"]["max_length"] == 128
    assert bundle.manifest.training.metrics["parity_maximum_length"] < 1e-3  # all 128 positions checked
    words = "what a great day to be out in the sun with friends".split()
    with TestClient(create_app(Settings(bundle=backbone_bundle, device="cpu"))) as client:
        def read(text: str, **options) -> dict:
            body = {"inputs": [text], "include": ["components", "chunks"], **options}
            response = client.post("/v1/atomize", json=body)
            assert response.status_code == 200, response.text
            return response.json()["results"][0]

        longer = next(r for n in range(10, 120, 5) if len((r := read(" ".join((words * 12)[:n])))["components"]) > 70)
        assert not longer["truncated"]  # past the training cut of 64, within 128
        long_text = " ".join(words * 30)
        cut = read(long_text)
        assert cut["truncated"] and len(cut["components"]) == 126  # 128 less [CLS] and [SEP]
        whole = read(long_text, chunk=True)
        assert len(whole["chunks"]) >= 3 and whole["chunks"][-1]["end"] == len(long_text)
        assert [c["token"] for c in whole["components"][:126]] == [c["token"] for c in cut["components"]]


def test_export_leaves_the_training_texts_out_when_asked(backbone_run, tmp_path):
    from training.export import export_bundle

    kept = load_bundle(export_bundle(backbone_run, tmp_path / "with", report=False))
    lines = (kept.path / "atoms.metadata.jsonl").read_bytes().split(b"\n")[:-1]  # (texts may hold U+2028)
    assert [json.loads(line)["text"] for line in lines] == load_run_dataset(backbone_run).train.texts
    left = load_bundle(export_bundle(backbone_run, tmp_path / "without", report=False, texts=False))
    assert not (left.path / "atoms.metadata.jsonl").exists() and "atoms.metadata.jsonl" not in left.manifest.files
