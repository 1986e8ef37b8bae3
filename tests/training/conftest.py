"""Training fixtures: the tiny runs and bundles are session fixtures of tests/conftest.py (shared
with the service and deploy tests); a tiny pretrained-shaped backbone is built here."""

from __future__ import annotations

import pytest

from ..conftest import TINY_MODEL, tiny_options  # noqa: F401  (re-exported for the tests here)


def make_tiny_backbone(folder, texts: list[str]):
    """A tiny randomly initialised BERT-shaped Hugging Face folder (config.json, model.safetensors,
    tokenizer.json with a [CLS] ... [SEP] post-processor), as `--backbone PATH` takes it. Tests use
    it instead of MiniLM: the same code path in a fraction of a second."""
    from tokenizers import processors
    from transformers import BertConfig, BertModel

    from training.datasets.wordpiece import train_wordpiece

    tokenizer = train_wordpiece(texts, vocab_size=300, max_length=512)
    tokenizer.add_special_tokens(["[CLS]", "[SEP]"])
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    config = BertConfig(
        vocab_size=tokenizer.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128,
    )
    BertModel(config, add_pooling_layer=False).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory):
    from training.data import load_dataset

    texts = load_dataset("tweets", limit=400).train.texts
    return make_tiny_backbone(tmp_path_factory.mktemp("backbone") / "tiny-bert", texts)


@pytest.fixture(scope="session")
def backbone_run(tiny_backbone, tmp_path_factory):
    from training.train import train

    return train(tiny_options(
        "tweets", tmp_path_factory.mktemp("runs") / "tweets-backbone", backbone=str(tiny_backbone),
        model_overrides={}, epochs=1, lr=1e-3, backbone_lr=1e-3,
    ))
