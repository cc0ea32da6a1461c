"""The variance-preserving diffusion process written in log-SNR terms (UL_METHOD §1)."""

import torch
from torch import Tensor


def alpha_sigma(logsnr: Tensor) -> tuple[Tensor, Tensor]:
    # VP: alpha^2 = sigmoid(lambda), sigma^2 = sigmoid(-lambda)
    return torch.sigmoid(logsnr).sqrt(), torch.sigmoid(-logsnr).sqrt()


def expand_to(v: Tensor, ref: Tensor) -> Tensor:
    """Reshape a per-example (B,) tensor to broadcast against `ref` (B, ...)."""
    return v.reshape(v.shape + (1,) * (ref.ndim - v.ndim))


def diffuse(x: Tensor, logsnr: Tensor, eps: Tensor) -> Tensor:
    # Forward noising: x_t = alpha * x + sigma * eps
    alpha, sigma = alpha_sigma(expand_to(logsnr, x))
    return alpha * x + sigma * eps


def x_to_eps(z_t: Tensor, x: Tensor, logsnr: Tensor) -> Tensor:
    # eps = (z_t - alpha * x) / sigma
    alpha, sigma = alpha_sigma(expand_to(logsnr, z_t))
    return (z_t - alpha * x) / sigma


def v_to_x(z_t: Tensor, v: Tensor, logsnr: Tensor) -> Tensor:
    # v = alpha * eps - sigma * x  =>  x = alpha * z_t - sigma * v
    alpha, sigma = alpha_sigma(expand_to(logsnr, z_t))
    return alpha * z_t - sigma * v
