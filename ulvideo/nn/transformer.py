"""Transformer building blocks over a video token grid (B, T, S, C), S = H*W tokens per frame.

A block in "factorised" mode does spatial attention within each frame, then temporal attention
across frames at each position, then an MLP; in "full" mode one attention spans all T*S tokens.
Every sub-layer is pre-norm with AdaLN conditioning (DiT) on a per-example vector.
"""

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn

from .attention import attention
from .norm import modulate, modulation_linear

ATTENTION_MODES = ("factorised", "full")


def rms_norm(x: Tensor, scale: Tensor, eps: float = 1e-6) -> Tensor:
    # RMSNorm over the last dim (QK-norm), statistics in float32, output in x's dtype
    rms = torch.rsqrt(x.float().square().mean(-1, keepdim=True) + eps)
    return (x.float() * rms).to(x.dtype) * scale.to(x.dtype)


class SelfAttention(nn.Module):
    """Multi-head self-attention on (N, L, C) with RMS-normalised queries and keys."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.backend: str | None = None  # a runtime switch: ulvideo.nn.set_attention_backend
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_scale = nn.Parameter(torch.ones(dim // heads))
        self.k_scale = nn.Parameter(torch.ones(dim // heads))
        self.out = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        n, length, dim = x.shape
        q, k, v = self.qkv(x).reshape(n, length, 3, self.heads, dim // self.heads).unbind(2)
        q, k = rms_norm(q, self.q_scale), rms_norm(k, self.k_scale)
        out = attention(q, k, v, backend=self.backend)
        return self.dropout(self.out(out.reshape(n, length, dim)))


class MLP(nn.Module):
    """Linear -> GELU -> dropout -> Linear."""

    def __init__(self, dim: int, ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.dropout(F.gelu(self.fc1(x))))


class TransformerBlock(nn.Module):
    """One AdaLN transformer block on video tokens x (B, T, S, C), conditioned on cond (B, cond_dim)."""

    def __init__(
        self,
        dim: int,
        heads: int,
        cond_dim: int,
        mode: str = "factorised",
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
    ):
        super().__init__()
        if mode not in ATTENTION_MODES:
            raise ValueError(f"attention mode must be one of {ATTENTION_MODES}, got {mode!r}")
        self.mode = mode
        self.attn = SelfAttention(dim, heads, dropout)
        self.temporal_attn = SelfAttention(dim, heads, dropout) if mode == "factorised" else None
        self.mlp = MLP(dim, mlp_ratio, dropout)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        sublayers = 3 if mode == "factorised" else 2
        self.mod = modulation_linear(cond_dim, 2 * sublayers * dim)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        b, t, s, c = x.shape
        shifts_scales = self.mod(cond).chunk(self.mod.out_features // c, dim=-1)
        if self.mode == "full":
            h = modulate(self.norm(x), *shifts_scales[0:2]).reshape(b, t * s, c)
            x = x + self.attn(h).reshape(b, t, s, c)
        else:
            h = modulate(self.norm(x), *shifts_scales[0:2]).reshape(b * t, s, c)
            x = x + self.attn(h).reshape(b, t, s, c)
            h = modulate(self.norm(x), *shifts_scales[2:4]).transpose(1, 2).reshape(b * s, t, c)
            x = x + self.temporal_attn(h).reshape(b, s, t, c).transpose(1, 2)
        return x + self.mlp(modulate(self.norm(x), *shifts_scales[-2:]))


def run_blocks(blocks: nn.ModuleList, x: Tensor, cond: Tensor, checkpointing: bool) -> Tensor:
    """Apply transformer blocks in order, with activation checkpointing when asked and training."""
    for block in blocks:
        if checkpointing and torch.is_grad_enabled():
            x = torch.utils.checkpoint.checkpoint(block, x, cond, use_reentrant=False)
        else:
            x = block(x, cond)
    return x
