"""Normalisation with conditioning: per-frame group norm and adaptive layer norm (AdaLN)."""

import math

import torch
from torch import Tensor, nn


def modulation_linear(in_features: int, out_features: int, std: float = 1e-3) -> nn.Linear:
    """The Linear producing AdaLN shift/scale: zero bias and tiny N(0, std^2) weights, so an
    adaptive norm starts as (almost) a plain norm while gradients still reach the conditioning."""
    linear = nn.Linear(in_features, out_features)
    nn.init.normal_(linear.weight, std=std)
    nn.init.zeros_(linear.bias)
    return linear


def frame_group_norm(x: Tensor, groups: int, eps: float = 1e-6) -> Tensor:
    # GroupNorm over (channels in group, H, W) of each frame on its own, so time stays causal
    b, c, t, h, w = x.shape
    xg = x.float().reshape(b, groups, c // groups, t, h, w)
    var, mean = torch.var_mean(xg, dim=(2, 4, 5), keepdim=True, correction=0)
    return ((xg - mean) * torch.rsqrt(var + eps)).reshape(x.shape).to(x.dtype)


class GroupNorm3d(nn.Module):
    """Per-frame GroupNorm on (B, C, T, H, W): adaptive to `cond` (B, cond_dim) when cond_dim > 0,
    else with a learned affine."""

    def __init__(self, channels: int, cond_dim: int = 0, max_groups: int = 32):
        super().__init__()
        self.groups = math.gcd(max_groups, channels)
        if cond_dim > 0:
            self.mod = modulation_linear(cond_dim, 2 * channels)
        else:
            self.mod = None
            self.weight = nn.Parameter(torch.ones(channels))
            self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        x = frame_group_norm(x, self.groups)
        if self.mod is None:
            return x * self.weight.view(-1, 1, 1, 1) + self.bias.view(-1, 1, 1, 1)
        # Adaptive GroupNorm: x * (1 + scale(cond)) + shift(cond)
        shift, scale = self.mod(cond).view(x.shape[0], 2, -1, 1, 1, 1).unbind(1)
        return x * (1 + scale) + shift


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    # AdaLN (DiT): x * (1 + scale) + shift, with (B, C) shift/scale broadcast over x's middle dims
    shape = (x.shape[0],) + (1,) * (x.ndim - 2) + (x.shape[-1],)
    return x * (1 + scale.reshape(shape)) + shift.reshape(shape)
