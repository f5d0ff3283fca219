"""Efficient-Prompt's prompt learner, one piece for class names and sentences: learned prefix and suffix vectors
laid around each text's own token embeddings, run through CLIP's frozen text tower and pooled at [EOT].

Each text is read as [SOT] a_1..a_P <text tokens> b_1..b_S [EOT]. The P + S vectors are shared by every text,
so any text can be encoded, seen in training or not. The tower stays frozen (and out of the state dict) while
gradients flow through it into the prompts. A text too long for the context with the prompts is refused
(class names: a longer name is a mistake) or cut to fit, its [EOT] kept (sentences: captions run long).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from clipcache import InputError


@dataclass(frozen=True)
class PromptLayout:
    """Where each position of each prompted sequence reads from, (N, context) unless noted; `layout[rows]`
    selects texts."""

    tokens: torch.Tensor  # token ids of each text's own sequence ([SOT] text [EOT] 0...)
    token_index: torch.Tensor  # the position of `tokens` a position reads (where it is not a prompt)
    prompt_index: torch.Tensor  # the prompt vector it reads (where it is one), into prefix + suffix
    is_prompt: torch.Tensor  # bool
    eot: torch.Tensor  # (N,) the position of [EOT], where the sequence is pooled
    room: int  # text tokens that fit beside the prompts
    truncated: int = 0  # texts whose tokens were cut to `room`

    TENSORS = ("tokens", "token_index", "prompt_index", "is_prompt", "eot")

    def __getitem__(self, rows: Any) -> PromptLayout:
        return replace(self, **{name: getattr(self, name)[rows] for name in self.TENSORS})

    def __len__(self) -> int:
        return len(self.tokens)

    def to(self, device: torch.device) -> PromptLayout:
        return replace(self, **{name: getattr(self, name).to(device) for name in self.TENSORS})


class PromptedText(nn.Module):
    """`prefix` and `suffix` prompt vectors (N(0, 0.01^2), as the reference initialises them) around texts,
    through the frozen `tower` (an open_clip model) made by `tokenizer`."""

    def __init__(self, tower: nn.Module, tokenizer: Any, prefix: int, suffix: int) -> None:
        super().__init__()
        if prefix < 0 or suffix < 0 or prefix + suffix == 0:
            raise InputError(f"prompt head: prefix={prefix}, suffix={suffix}: at least one prompt vector")
        self._tower = [tower.eval().requires_grad_(False)]  # a list: not a submodule, not in the state dict
        self.tokenizer = tokenizer
        self.context_length = tower.positional_embedding.shape[0]
        width = tower.token_embedding.weight.shape[1]
        self.prefix = nn.Parameter(torch.randn(prefix, width) * 0.01)
        self.suffix = nn.Parameter(torch.randn(suffix, width) * 0.01)

    @property
    def tower(self) -> nn.Module:
        return self._tower[0]

    def layout(self, texts: list[str], truncate: bool) -> PromptLayout:
        """Tokenise `texts` once and lay out their prompted sequences. A text with more tokens than the context
        leaves beside the prompts is cut to fit (`truncate`; counted in `truncated`) or refused."""
        p, s, context = len(self.prefix), len(self.suffix), self.context_length
        tokens = self.tokenizer(texts)
        ends = tokens.argmax(dim=-1)  # [EOT] is the largest id (the tokenizer itself cuts at the context)
        lengths = ends - 1  # text tokens between [SOT] and [EOT]
        room = context - 2 - p - s
        over = lengths > room
        if over.any() and not truncate:
            raise InputError(f"prompt head: {p} + {s} prompt vectors and a class name of {int(lengths.max())} "
                             f"tokens exceed the text context of {context}")
        if room < 1:
            raise InputError(f"prompt head: {p} + {s} prompt vectors leave no room for text in the text context "
                             f"of {context}")
        if over.any():
            rows = over.nonzero()[:, 0]
            eot_ids = tokens[rows, ends[rows]]
            tokens[rows, room + 1:] = 0
            tokens[rows, room + 1] = eot_ids
            lengths = lengths.clamp(max=room)
        lengths = lengths[:, None]
        position = torch.arange(context)[None]
        in_prefix = (position >= 1) & (position <= p)
        in_suffix = (position > p + lengths) & (position <= p + lengths + s)
        token_index = torch.where(position > p + lengths + s, position - p - s, (position - p).clamp(min=0))
        prompt_index = torch.where(in_prefix, position - 1, position - lengths - 1).clamp(0, p + s - 1)
        return PromptLayout(tokens, token_index.clamp(max=context - 1), prompt_index, in_prefix | in_suffix,
                            (p + lengths + s + 1)[:, 0], room, int(over.sum()))

    def forward(self, layout: PromptLayout) -> torch.Tensor:
        """(N, E): each laid-out sequence through the frozen text tower, pooled at [EOT], projected."""
        tower = self.tower
        if tower.token_embedding.weight.device != self.prefix.device:
            tower.to(self.prefix.device)
        layout = layout.to(self.prefix.device)
        embedded = tower.token_embedding(layout.tokens)
        own = embedded.gather(1, layout.token_index[..., None].expand(-1, -1, embedded.shape[-1]))
        prompts = torch.cat([self.prefix, self.suffix])[layout.prompt_index]
        x = torch.where(layout.is_prompt[..., None], prompts, own) + tower.positional_embedding
        x = tower.ln_final(tower.transformer(x, attn_mask=tower.attn_mask))
        pooled = x[torch.arange(len(x), device=x.device), layout.eot]
        projection = tower.text_projection
        if projection is None:
            return pooled
        return projection(pooled) if isinstance(projection, nn.Linear) else pooled @ projection
