"""Latent bitrate reporting from the prior ELBO (UL_METHOD §3)."""

import math

from torch import Tensor


def bits_per_pixel(prior_nats: Tensor, frames: int, height: int, width: int) -> Tensor:
    # UL: bits/pixel = L_z / ln 2 / (T * H * W), on the pixel grid, channels not counted
    return prior_nats / math.log(2) / (frames * height * width)


def bits_per_latent_dim(prior_nats: Tensor, latent_numel: int) -> Tensor:
    # L_z / ln 2 / (number of latent dimensions C_z * T_z * H_z * W_z)
    return prior_nats / math.log(2) / latent_numel


def gaussian_kl(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) in nats per example (the KL arm's rate, summed over
    every latent dimension)."""
    # KL of diagonal Gaussians to N(0, 1): 1/2 (mu^2 + s^2 - 1 - ln s^2) per dimension
    per_dim = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar)
    return per_dim.flatten(1).sum(1)
