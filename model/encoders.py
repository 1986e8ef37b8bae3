"""Component encoders: a small pre-norm Transformer over the components of each data point.

Written with plain layers and scaled_dot_product_attention (not nn.TransformerEncoder) so the
graph exports cleanly to ONNX and padded keys are masked with a large finite negative: a row of
padding then attends to nothing without producing NaN, and real components never see padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import AtomConfig

MASKED_SCORE = -1e9  # finite, so fully padded rows stay NaN-free; exp() of it is exactly 0 in fp32


class SelfAttention(nn.Module):
    def __init__(self, config: AtomConfig):
        super().__init__()
        assert config.d_model % config.n_heads == 0
        self.n_heads = config.n_heads
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.proj = nn.Linear(config.d_model, config.d_model)
        self.dropout = config.dropout

    def forward(self, h: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        batch, n, d = h.shape
        q, k, v = self.qkv(h).split(d, dim=-1)
        # (B, heads, n, d/heads)
        q, k, v = (t.reshape(batch, n, self.n_heads, d // self.n_heads).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=key_bias, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(out.transpose(1, 2).reshape(batch, n, d))


class Block(nn.Module):
    def __init__(self, config: AtomConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.d_model)
        self.attn = SelfAttention(config)
        self.norm2 = nn.LayerNorm(config.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(config.d_model, 4 * config.d_model),
            nn.GELU(),
            nn.Linear(4 * config.d_model, config.d_model),
            nn.Dropout(config.dropout),
        )

    def forward(self, h: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        h = h + self.attn(self.norm1(h), key_bias)
        return h + self.mlp(self.norm2(h))


class ComponentEncoder(nn.Module):
    """Embeds components (token ids or numeric vectors), adds positions, runs the Transformer.

    text:    inputs int64 (B, n)      -> h (B, n, d)
    numeric: inputs float32 (B, n, f) -> h (B, n, d)
    """

    def __init__(self, config: AtomConfig):
        super().__init__()
        self.modality = config.modality
        if config.modality == "text":
            self.embed = nn.Embedding(config.vocab_size, config.d_model, padding_idx=0)
        elif config.modality == "numeric":
            self.embed = nn.Linear(config.component_dim, config.d_model)
            self.register_buffer("input_scale", torch.tensor(float(config.input_scale)), persistent=False)
        else:
            raise ValueError(f"unknown modality {config.modality!r}")
        self.position = nn.Embedding(config.max_components, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = nn.LayerNorm(config.d_model)
        self.dropout = nn.Dropout(config.dropout)

    def token_embeddings(self) -> torch.Tensor | None:
        """(V, d): every token id's own embedding (e), for text; None for numeric components."""
        return self.embed.weight if self.modality == "text" else None

    def forward(self, inputs: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (h, e): contextual states and the components' own embeddings, both (B, n, d)."""
        if self.modality == "numeric":
            inputs = inputs * self.input_scale
        n = inputs.shape[1]
        e = self.embed(inputs)  # (B, n, d), what each component is, before any context
        h = self.dropout(e + self.position.weight[:n])  # (B, n, d)
        # (B, 1, 1, n) additive bias over keys: 0 for real components, MASKED_SCORE for padding
        key_bias = ((1.0 - mask.to(h.dtype)) * MASKED_SCORE)[:, None, None, :]
        for block in self.blocks:
            h = block(h, key_bias)
        return self.norm(h), e
