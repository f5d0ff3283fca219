"""`prompt` (Efficient-Prompt): learned continuous prompt vectors around each class name, run through
CLIP's frozen text encoder, against a temporal transformer over the frame embeddings.

The text tower stays frozen (and out of the checkpoint) while gradients flow through it into the
prompt vectors; any class name can be scored, seen in training or not.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from heads.base import FeatureRequest, HeadContext
from heads.temporal import TemporalTransformer

TEMPERATURE = 0.07


class PromptHead(nn.Module):
    uses_text_tower = True  # the training loop provides the store's text encoder and tokenizer

    def __init__(self, ctx: HeadContext, prefix: int = 16, suffix: int = 16, depth: int = 1) -> None:
        super().__init__()
        if ctx.text_tower is None:
            raise ValueError("the prompt head needs the store's text encoder")
        model, self._tokenizer = ctx.text_tower
        self._tower = [model.eval().requires_grad_(False)]  # a list: not a submodule, not in the state dict
        width = model.token_embedding.weight.shape[1]
        self.context_length = model.positional_embedding.shape[0]
        self.request = FeatureRequest(pooled=True)
        self.prefix = nn.Parameter(torch.randn(prefix, width) * 0.02)
        self.suffix = nn.Parameter(torch.randn(suffix, width) * 0.02)
        self.temporal = TemporalTransformer(ctx.embed_dim, ctx.frames, depth) if depth > 0 else None
        self.set_classes(list(ctx.class_names or ctx.classes))

    def set_classes(self, names: list[str]) -> None:
        """Tokenise class names once; the prompts are shared by all classes, so new names just work."""
        tokens = self._tokenizer(names)
        lengths = tokens.argmax(dim=-1) - 1  # name tokens between start-of-text and end-of-text
        longest = int(lengths.max()) + 2 + len(self.prefix) + len(self.suffix)
        if longest > self.context_length:
            raise ValueError(f"prompt head: {len(self.prefix)} + {len(self.suffix)} prompt vectors and a class name of "
                             f"{int(lengths.max())} tokens exceed the text context of {self.context_length}")
        self.register_buffer("tokens", tokens, persistent=False)
        self.register_buffer("lengths", lengths, persistent=False)

    def class_embeddings(self) -> torch.Tensor:
        """(C, E): each class as [SOT] prefix name suffix [EOT], pooled at [EOT], projected."""
        tower = self._tower[0]
        if tower.token_embedding.weight.device != self.prefix.device:
            tower.to(self.prefix.device)
        embedded = tower.token_embedding(self.tokens.to(self.prefix.device))
        rows = []
        for c, n in enumerate(self.lengths.tolist()):
            sequence = torch.cat([embedded[c, :1], self.prefix, embedded[c, 1:1 + n], self.suffix,
                                  embedded[c, 1 + n:]])
            rows.append(sequence[: self.context_length])
        x = torch.stack(rows) + tower.positional_embedding
        x = tower.ln_final(tower.transformer(x, attn_mask=tower.attn_mask))
        eot = 1 + len(self.prefix) + self.lengths.to(x.device) + len(self.suffix)
        pooled = x[torch.arange(len(x), device=x.device), eot]
        projection = tower.text_projection
        return projection(pooled) if isinstance(projection, nn.Linear) else pooled @ projection

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        frames = batch["pooled"]
        video = self.temporal(frames) if self.temporal is not None else frames.mean(dim=1)
        text = F.normalize(self.class_embeddings(), dim=-1)
        return F.normalize(video, dim=-1) @ text.t().to(video.dtype) / TEMPERATURE
