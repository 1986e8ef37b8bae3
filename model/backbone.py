"""A pretrained Hugging Face transformer as the component encoder (DESIGN section 2, "Pretrained
backbones").

The components are the backbone's word pieces. It returns the same pair as `ComponentEncoder`:
h, the contextual states of the last layer, and e, each piece's own input (word) embedding,
before position and context, which is what the role head reads. The architecture is rebuilt
from the Hugging Face config dict stored in `AtomConfig.backbone_config`, so a run folder or a
checkpoint rebuilds the model without the original folder; the pretrained weights are loaded
once, at the start of training (`training.backbone`: model/ does no file I/O).

`train_layers` chooses what is fine-tuned: -1 every layer and the embeddings, 0 nothing (a
frozen backbone), k > 0 the top k layers. Whenever a frozen part exists (0 or k), its output,
the states at the boundary, can be computed once per item and reused every epoch: an epoch then
costs the top k layers and the head only (`frozen_part`, and `forward(..., states=...)`). `backbone_adapter_layers` new Transformer blocks on top learn from scratch. Frozen parts stay in eval
mode (no dropout) so their output is the pretrained function.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from .config import AtomConfig
from .encoders import MASKED_SCORE, Block

def _hf_config(data: dict):
    from transformers import AutoConfig

    data = dict(data)
    return AutoConfig.for_model(data.pop("model_type"), **data)


class BackboneEncoder(nn.Module):
    """token ids (B, n) int64, mask (B, n) bool -> h (B, n, d), e (B, n, d)."""

    def __init__(self, config: AtomConfig):
        super().__init__()
        from transformers import AutoModel

        if not config.backbone_config:
            raise ValueError("BackboneEncoder needs AtomConfig.backbone_config")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub
        hf_config = _hf_config(config.backbone_config)
        # sdpa attention: exported by the dynamo ONNX exporter, and the fastest path on CPU and GPU
        self.model = AutoModel.from_config(hf_config, add_pooling_layer=False, attn_implementation="sdpa")
        self.train_layers = config.backbone_train_layers
        self._freeze()
        # new Transformer blocks on top of the backbone, trained from scratch: what a frozen
        # backbone can still adapt (its own states then cost one forward pass per item, ever)
        self.adapter = nn.ModuleList(Block(config) for _ in range(config.backbone_adapter_layers))
        self.adapter_norm = nn.LayerNorm(config.d_model) if config.backbone_adapter_layers else nn.Identity()

    @property
    def layers(self) -> nn.ModuleList:
        return self.model.encoder.layer

    def frozen_modules(self) -> list[nn.Module]:
        if self.train_layers < 0:
            return []
        keep = len(self.layers) - min(self.train_layers, len(self.layers))
        return [self.model.embeddings, *self.layers[:keep]]

    def _freeze(self) -> None:
        for module in self.frozen_modules():
            module.requires_grad_(False)

    def train(self, mode: bool = True) -> "BackboneEncoder":
        super().train(mode)
        for module in self.frozen_modules():  # frozen parts keep computing the pretrained function
            module.eval()
        return self

    @property
    def frozen(self) -> bool:
        """Nothing of the pretrained model learns."""
        return self.train_layers == 0

    @property
    def frozen_depth(self) -> int | None:
        """How many pretrained layers are frozen (with the embeddings below them); None when the
        whole backbone learns. Their output can be computed once per item and reused."""
        if self.train_layers < 0:
            return None
        return len(self.layers) - min(self.train_layers, len(self.layers))

    def backbone_states(self, inputs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The pretrained model's last hidden states (B, n, d)."""
        return self.model(input_ids=inputs, attention_mask=mask.to(torch.long)).last_hidden_state

    def frozen_part(self, inputs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The states at the top of the frozen part (B, n, d): the last hidden states of a frozen
        backbone, the input of the lowest trained layer otherwise."""
        depth = self.frozen_depth
        if depth is None:
            raise ValueError("a fully fine-tuned backbone has no frozen part")
        if depth == len(self.layers):
            return self.backbone_states(inputs, mask)
        out = self.model(input_ids=inputs, attention_mask=mask.to(torch.long), output_hidden_states=True)
        return out.hidden_states[depth]  # hidden_states[0] is the embeddings' output

    def trained_top(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The trained top layers on the frozen part's states: with `frozen_part`, the same
        function as the whole backbone (the attention mask as the sdpa kernel takes it: True attends)."""
        depth = self.frozen_depth
        attend = mask[:, None, None, :].to(torch.bool)  # (B, 1, 1, n)
        for layer in self.layers[depth:]:
            h = layer(h, attention_mask=attend)
        return h

    def token_embeddings(self) -> torch.Tensor:
        """(V, d): every token id's own embedding (e), the backbone's word embeddings."""
        return self.model.embeddings.word_embeddings.weight

    def forward(
        self, inputs: torch.Tensor, mask: torch.Tensor, states: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`states`: the frozen part's output for these inputs (`frozen_part`), when computed before."""
        e = self.model.embeddings.word_embeddings(inputs)  # (B, n, d) each piece on its own
        h = self.backbone_states(inputs, mask) if states is None else self.trained_top(states.to(e.dtype), mask)
        if len(self.adapter):
            key_bias = ((1.0 - mask.to(h.dtype)) * MASKED_SCORE)[:, None, None, :]  # (B, 1, 1, n)
            for block in self.adapter:
                h = block(h, key_bias)
            h = self.adapter_norm(h)
        return h, e
