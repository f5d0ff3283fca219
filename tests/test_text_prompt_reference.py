"""The `text` and `prompt` heads against their references' equations, written out here with explicit
matmuls at small sizes (Text4Vis modules/video_clip.py: video_header "Transf"; Efficient-Prompt
src/model.py: the temporal transformer and the cosine / 0.07 logits), plus the references' defaults and
initialisation. Inputs are small in scale so that a LayerNorm eps of 1e-5 instead of 1e-12, or GELU
instead of QuickGELU, moves the output far beyond the tolerance."""
from __future__ import annotations

import math

import open_clip
import pytest
import torch

from clipcache.heads.base import HeadContext
from clipcache.heads.prompt import PromptHead
from clipcache.heads.text import TextHead
from clipcache.pipeline.models import load_model
from conftest import TINY_CONFIG

FRAMES, BATCH = 5, 3


def _context(embed: int, text_width: int, classes: int = 4, tower: tuple | None = None) -> HeadContext:
    generator = torch.Generator().manual_seed(1)
    return HeadContext(
        classes=tuple(f"class {i}" for i in range(classes)), frames=FRAMES, embed_dim=embed, width=embed, heads=2,
        tokens=5, grid=(2, 2), layers=(2,), num_blocks=3, logit_scale=30.0,
        text_embeddings=torch.randn(classes, embed, generator=generator),
        model={"config": {"text_cfg": {"width": text_width}}}, text_tower=tower,
    )


def _layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    mean = x.mean(dim=-1, keepdim=True)
    variance = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return weight * (x - mean) / torch.sqrt(variance + eps) + bias


def _block(x: torch.Tensor, p: dict[str, torch.Tensor], heads: int, eps: float) -> torch.Tensor:
    """x + MHA(LN1 x); x + W2 QuickGELU(W1 LN2 x + b1) + b2, over the frames of each video."""
    b, t, d = x.shape
    h = _layer_norm(x, p["ln_1.weight"], p["ln_1.bias"], eps)
    q, k, v = (h @ p["attn.in_proj_weight"].T + p["attn.in_proj_bias"]).split(d, dim=-1)
    q, k, v = (z.reshape(b, t, heads, d // heads).transpose(1, 2) for z in (q, k, v))
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // heads), dim=-1)
    attended = (weights @ v).transpose(1, 2).reshape(b, t, d)
    x = x + attended @ p["attn.out_proj.weight"].T + p["attn.out_proj.bias"]
    hidden = _layer_norm(x, p["ln_2.weight"], p["ln_2.bias"], eps) @ p["mlp.c_fc.weight"].T + p["mlp.c_fc.bias"]
    hidden = hidden * torch.sigmoid(1.702 * hidden)
    return x + hidden @ p["mlp.c_proj.weight"].T + p["mlp.c_proj.bias"]


def _temporal(frames: torch.Tensor, state: dict[str, torch.Tensor], heads: int, eps: float, residual: bool
              ) -> torch.Tensor:
    """mean_t of Blocks(x + P[:T]) (+ x for Text4Vis's outer residual)."""
    h = frames + state["position"][: frames.shape[1]]
    depth = len({key.split(".")[1] for key in state if key.startswith("blocks.")})
    for i in range(depth):
        h = _block(h, {k.removeprefix(f"blocks.{i}."): v for k, v in state.items() if k.startswith(f"blocks.{i}.")},
                   heads, eps)
    return (h + frames if residual else h).mean(dim=1)


def _perturb(module: torch.nn.Module) -> None:
    """Non-trivial LayerNorms and biases, so that every term of the equations is exercised."""
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name.endswith(("ln_1.weight", "ln_2.weight")):
                param.copy_(1 + 0.3 * torch.randn(param.shape, generator=generator))
            elif name.endswith("bias"):
                param.copy_(0.05 * torch.randn(param.shape, generator=generator))


def _frames(embed: int) -> torch.Tensor:
    return 0.003 * torch.randn(BATCH, FRAMES, embed, generator=torch.Generator().manual_seed(2))


def test_text_head_is_text4vis_video_header_and_scaled_cosine() -> None:
    ctx = _context(embed=128, text_width=128)  # Text4Vis: heads = text width / 64 = 2
    head = TextHead(ctx, depth=2).eval()
    _perturb(head)
    with torch.no_grad():
        head.temporal.position.mul_(0.1)  # keep the positions on the frames' small scale
    frames = _frames(128)
    state = {k: v for k, v in head.temporal.state_dict().items()}
    video = _temporal(frames, state, heads=2, eps=1e-12, residual=True)
    text = ctx.text_embeddings / ctx.text_embeddings.norm(dim=-1, keepdim=True)
    expected = 30.0 * (video / video.norm(dim=-1, keepdim=True)) @ text.T
    with torch.no_grad():
        torch.testing.assert_close(head({"pooled": frames}), expected, atol=1e-5, rtol=1e-5)
        # the same equations with the other reference's LayerNorm eps are far away: the test can tell
        wrong = _temporal(frames, state, heads=2, eps=1e-5, residual=True)
        assert (wrong - video).abs().max() > 1e-3 * video.abs().max()


def test_text_head_defaults_and_initialisation_are_text4vis() -> None:
    head = TextHead(_context(embed=256, text_width=512))
    temporal = head.temporal
    assert len(temporal.blocks) == 6 and temporal.residual
    assert temporal.blocks[0].attn.num_heads == 8  # the text tower's width / 64
    assert all(block.ln_1.eps == 1e-12 and block.ln_2.eps == 1e-12 for block in temporal.blocks)
    linears = [m for m in temporal.blocks.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 3 * 6  # c_fc, c_proj and the attention's out_proj of every block
    weights = torch.cat([m.weight.flatten() for m in linears])
    assert weights.std().item() == pytest.approx(0.02, rel=0.02) and abs(weights.mean().item()) < 1e-4
    assert all(not m.bias.any() for m in linears)
    assert temporal.position.std().item() == pytest.approx(0.02, rel=0.1)
    in_proj = temporal.blocks[0].attn.in_proj_weight  # PyTorch's Xavier-uniform, kept by Text4Vis
    assert in_proj.abs().max().item() <= math.sqrt(6 / (256 + 3 * 256)) and in_proj.std().item() > 0.03
    assert head.log_scale.item() == pytest.approx(math.log(30.0))


@pytest.fixture(scope="module")
def tower() -> tuple:
    return load_model("", model_config=TINY_CONFIG).model, open_clip.get_tokenizer("tiny-vit")


def test_prompt_head_is_efficient_prompts_temporal_module_and_cosine_over_temperature(tower: tuple) -> None:
    ctx = _context(embed=32, text_width=32, tower=tower)  # the tiny model's joint embedding width
    head = PromptHead(ctx, prefix=2, suffix=2, depth=2, heads=8).eval()
    _perturb(head.temporal)
    with torch.no_grad():
        head.temporal.position.mul_(0.1)
        frames = _frames(32)
        state = {k: v for k, v in head.temporal.state_dict().items()}
        video = _temporal(frames, state, heads=8, eps=1e-5, residual=False)
        text = head.class_embeddings()
        expected = (video / video.norm(dim=-1, keepdim=True)) @ (text / text.norm(dim=-1, keepdim=True)).T / 0.07
        torch.testing.assert_close(head({"pooled": frames}), expected, atol=1e-5, rtol=1e-5)
        with_residual = _temporal(frames, state, heads=8, eps=1e-5, residual=True)
        assert (with_residual - video).abs().max() > 1e-3 * video.abs().max()


def test_prompt_head_defaults_and_initialisation_are_efficient_prompts(tower: tuple) -> None:
    model = tower[0]
    head = PromptHead(_context(embed=32, text_width=32, tower=tower))
    temporal = head.temporal
    assert len(temporal.blocks) == 2 and not temporal.residual and temporal.blocks[0].attn.num_heads == 8
    assert all(block.ln_1.eps == 1e-5 for block in temporal.blocks)
    # 16 + 16 prompts do not fit the tiny tower's 24-token context with room for a name: cut equally
    assert model.positional_embedding.shape[0] == 24 and len(head.prefix) == len(head.suffix) == 7
    wide = PromptHead(_context(embed=256, text_width=32, tower=tower), prefix=10, suffix=10, depth=1, heads=8)
    prompts = torch.cat([wide.prefix, wide.suffix]).flatten()
    assert prompts.std().item() == pytest.approx(0.01, rel=0.1)  # the reference's N(0, 0.01^2)
    assert wide.temporal.position.std().item() == pytest.approx(0.01, rel=0.1)
    c_fc = wide.temporal.blocks[0].mlp.c_fc  # PyTorch's default: uniform within 1/sqrt(fan_in), biases too
    bound = 1 / math.sqrt(256)
    assert c_fc.weight.abs().max().item() <= bound and c_fc.weight.std().item() == pytest.approx(bound / math.sqrt(3),
                                                                                              rel=0.05)
    assert c_fc.bias.abs().max().item() <= bound and c_fc.bias.abs().max().item() > bound / 2
