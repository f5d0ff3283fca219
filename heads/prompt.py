"""`prompt` (Efficient-Prompt): learned continuous prompt vectors around each class name, run through
CLIP's frozen text encoder, against a temporal transformer over the frame embeddings.

Each class is read as [SOT] a_1..a_P <name tokens> b_1..b_S [EOT] and pooled at [EOT]; the prompt
vectors are shared by all classes, so any class name can be scored, seen in training or not. The text
tower stays frozen (and out of the checkpoint) while gradients flow through it into the prompts. The
video side is the reference's temporal module, h = Blocks(x + P) averaged over time (no outer residual),
and logits are cosine / 0.07.

One difference from the reference code, kept on purpose: its suffix vectors are rows of one table
indexed by sequence position, so the suffix a class gets shifts with the length of its name; here
the S suffix vectors are the same for every class, as the paper describes them.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from clipcache import InputError
from clipcache.heads.base import FeatureRequest, Head, HeadContext
from clipcache.heads.layers import TemporalTransformer

TEMPERATURE = 0.07  # fixed, as the reference
DEFAULT_PROMPTS = 16
NAME_ROOM = 8  # tokens of class name the default prompt counts leave room for


class PromptHead(Head):
    """`prefix`/`suffix` prompt vectors (default 16 each, as the reference's README run; fewer, equally on
    both sides, when the text context cannot hold them and an 8-token name), `depth` temporal
    transformer layers (default 2 as the reference's code; 0: the frame mean) with `heads` attention heads
    (default 8). Initialised as the reference: prompts and frame positions from N(0, 0.01^2), the rest
    PyTorch's defaults."""

    uses_text_tower = True

    def __init__(self, ctx: HeadContext, prefix: int | None = None, suffix: int | None = None, depth: int = 2,
                 heads: int = 8) -> None:
        super().__init__()
        if ctx.text_tower is None:
            raise InputError("the prompt head needs the store's text encoder")
        model, self._tokenizer = ctx.text_tower
        self._tower = [model.eval().requires_grad_(False)]  # a list: not a submodule, not in the state dict
        width = model.token_embedding.weight.shape[1]
        self.context_length = model.positional_embedding.shape[0]
        prefix, suffix = self._fitting(prefix, suffix)
        if prefix < 0 or suffix < 0 or prefix + suffix == 0:
            raise InputError(f"prompt head: prefix={prefix}, suffix={suffix}: at least one prompt vector")
        if depth < 0:
            raise InputError(f"prompt head depth={depth}: 0 (the frame mean) or more layers")
        self.request = FeatureRequest(pooled=True)
        self.prefix = nn.Parameter(torch.randn(prefix, width) * 0.01)
        self.suffix = nn.Parameter(torch.randn(suffix, width) * 0.01)
        self.temporal = TemporalTransformer(ctx.embed_dim, ctx.frames, depth, heads, residual=False, eps=1e-5,
                                            position_std=0.01) if depth > 0 else None
        self.set_classes(list(ctx.class_names or ctx.classes))

    def _fitting(self, prefix: int | None, suffix: int | None) -> tuple[int, int]:
        """The prompt counts asked for, else 16 each, or fewer where the text context is too short to hold
        them and a name of NAME_ROOM tokens (the tower alone decides: a checkpoint fits any class names)."""
        default = max(1, min(DEFAULT_PROMPTS, (self.context_length - 2 - NAME_ROOM) // 2))
        return (default if prefix is None else prefix), (default if suffix is None else suffix)

    def set_classes(self, names: list[str]) -> None:
        """Tokenise class names once and lay out where each sequence position reads from: a token
        embedding of the name's own sequence, or a prompt vector (index into prefix + suffix)."""
        p, s = len(self.prefix), len(self.suffix)
        tokens = self._tokenizer(names)
        lengths = tokens.argmax(dim=-1, keepdim=True) - 1  # name tokens between [SOT] and [EOT] (the largest id)
        if int(lengths.max()) + 2 + p + s > self.context_length:
            raise InputError(f"prompt head: {p} + {s} prompt vectors and a class name of {int(lengths.max())} "
                             f"tokens exceed the text context of {self.context_length}")
        position = torch.arange(self.context_length)[None]
        in_prefix = (position >= 1) & (position <= p)
        in_suffix = (position > p + lengths) & (position <= p + lengths + s)
        token_index = torch.where(position > p + lengths + s, position - p - s, (position - p).clamp(min=0))
        prompt_index = torch.where(in_prefix, position - 1, position - lengths - 1).clamp(0, p + s - 1)
        self.register_buffer("tokens", tokens, persistent=False)
        self.register_buffer("token_index", token_index.clamp(max=self.context_length - 1), persistent=False)
        self.register_buffer("prompt_index", prompt_index, persistent=False)
        self.register_buffer("is_prompt", in_prefix | in_suffix, persistent=False)
        self.register_buffer("eot", (p + lengths + s + 1)[:, 0], persistent=False)

    def class_embeddings(self) -> torch.Tensor:
        """(C, E): every class's prompted sequence through the frozen text tower, pooled at [EOT], projected."""
        tower = self._tower[0]
        if tower.token_embedding.weight.device != self.prefix.device:
            tower.to(self.prefix.device)
        embedded = tower.token_embedding(self.tokens)
        names = embedded.gather(1, self.token_index[..., None].expand(-1, -1, embedded.shape[-1]))
        prompts = torch.cat([self.prefix, self.suffix])[self.prompt_index]
        x = torch.where(self.is_prompt[..., None], prompts, names) + tower.positional_embedding
        x = tower.ln_final(tower.transformer(x, attn_mask=tower.attn_mask))
        pooled = x[torch.arange(len(x), device=x.device), self.eot]
        projection = tower.text_projection
        if projection is None:
            return pooled
        return projection(pooled) if isinstance(projection, nn.Linear) else pooled @ projection

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        frames = batch["pooled"]
        video = self.temporal(frames) if self.temporal is not None else frames.mean(dim=1)
        text = F.normalize(self.class_embeddings(), dim=-1)
        return F.normalize(video, dim=-1) @ text.t().to(video.dtype) / TEMPERATURE
