"""Embeddings: Fourier features of the log-SNR, and factorised 3D sinusoidal positions."""

import math

import torch
from torch import Tensor, nn


def fourier_features(
    x: Tensor, dim: int, min_period: float = 0.2, max_period: float = 200.0
) -> Tensor:
    # [cos(2 pi x / P_i), sin(2 pi x / P_i)] with periods P_i geometric in [min_period, max_period]
    half = dim // 2
    periods = torch.logspace(
        math.log10(min_period), math.log10(max_period), half, device=x.device, dtype=torch.float32
    )
    angles = 2 * math.pi * x.float()[:, None] / periods
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


class LogSNREmbedding(nn.Module):
    """logsnr (B,) -> (B, dim): Fourier features (periods 0.2 to 200 cover lambda in [-15, 15])
    followed by a 2-layer MLP."""

    def __init__(self, dim: int, features: int = 256):
        super().__init__()
        self.features = features
        self.mlp = nn.Sequential(nn.Linear(features, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, logsnr: Tensor) -> Tensor:
        return self.mlp(fourier_features(logsnr, self.features).to(self.mlp[0].weight.dtype))


def sincos_1d(positions: Tensor, dim: int) -> Tensor:
    # Transformer sinusoids: [sin(p w_i), cos(p w_i)], w_i = 10000^(-i / (dim/2))
    freqs = torch.exp(
        -math.log(10000.0) * torch.arange(dim // 2, device=positions.device) / (dim // 2)
    )
    angles = positions.float()[:, None] * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def sincos_3d(frames: int, height: int, width: int, dim: int, device=None) -> Tensor:
    """Factorised 3D sinusoidal positions for a (T, H, W) token grid in row-major order: (T*H*W, dim).

    The channels split into three even parts (time, row, column), each a 1D sinusoid of its axis.
    """
    if dim % 2:
        raise ValueError(f"sincos_3d needs an even dim, got {dim}")
    d_hw = 2 * (dim // 6)
    d_t = dim - 2 * d_hw
    t, h, w = torch.meshgrid(
        torch.arange(frames, device=device),
        torch.arange(height, device=device),
        torch.arange(width, device=device),
        indexing="ij",
    )
    parts = [
        sincos_1d(t.flatten(), d_t),
        sincos_1d(h.flatten(), d_hw),
        sincos_1d(w.flatten(), d_hw),
    ]
    return torch.cat(parts, dim=-1)
