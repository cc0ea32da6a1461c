"""The UL training objectives, in nats per example (summed over dimensions) (UL_METHOD §3-§5).

Every loss takes a `denoiser(z_t, logsnr) -> x_hat` callable, so any network can be plugged in.
"""

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .schedules import Schedule, stratified_t
from .vp import diffuse

Denoiser = Callable[[Tensor, Tensor], Tensor]


def check_input(name: str, x: Tensor, min_ndim: int = 2) -> None:
    """Raise a clear error for a non-tensor or an unbatched one. Shapes only: no device sync.
    Values are checked at the edges (the data, and the trainer's reduced loss)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < min_ndim:
        raise ValueError(
            f"{name} must be batched (B, ...) with >= {min_ndim} dims, got {tuple(x.shape)}"
        )


def _diffusion_sq_err(
    denoiser: Denoiser,
    x: Tensor,
    schedule: Schedule,
    t: Tensor | None,
    eps: Tensor | None,
    keep_clean: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """One Monte-Carlo draw: (||x - x_hat(x_t, lambda(t))||^2 summed per example in fp32 or wider, t)."""
    t = stratified_t(x.shape[0], device=x.device) if t is None else t
    eps = torch.randn_like(x) if eps is None else eps
    logsnr = schedule(t).to(x.dtype)
    x_t = diffuse(x, logsnr, eps)
    if keep_clean is not None:
        x_t = torch.where(keep_clean, x, x_t)
    x_hat = denoiser(x_t, logsnr)
    if x_hat.shape != x.shape:
        raise ValueError(f"denoiser returned shape {tuple(x_hat.shape)}, expected {tuple(x.shape)}")
    weight_dtype = torch.promote_types(x.dtype, torch.float32)  # never weight exp(lambda) in bf16
    sq_err = (x - x_hat).to(weight_dtype).square()
    if keep_clean is not None:
        sq_err = sq_err * (~keep_clean)
    return sq_err.flatten(1).sum(1), t.to(weight_dtype)


def _elbo_weight(schedule: Schedule, t: Tensor) -> Tensor:
    # UL eq. 3/4 integrand: -dlambda/dt * exp(lambda)/2 multiplies ||x - x_hat||^2
    return schedule.neg_dlogsnr_dt(t) * torch.exp(schedule(t)) / 2


def _weighted_diffusion_mse(
    denoiser: Denoiser,
    x: Tensor,
    schedule: Schedule,
    weight: Callable[[Tensor], Tensor] | None,
    t: Tensor | None,
    eps: Tensor | None,
    keep_clean: Tensor | None = None,
) -> Tensor:
    # UL eq. 3/4: -dlambda/dt * exp(lambda)/2 * w(lambda) * ||x - x_hat||^2, summed over dims
    sq_err, t = _diffusion_sq_err(denoiser, x, schedule, t, eps, keep_clean)
    w = _elbo_weight(schedule, t)
    if weight is not None:
        w = w * weight(schedule(t))
    return w * sq_err


def terminal_kl(z_clean: Tensor, logsnr_min: float) -> Tensor:
    # KL[q(z_1|z) || N(0, I)] per example: 0.5 * sum(alpha_1^2 z^2 + sigma_1^2 - 1 - log sigma_1^2)
    alpha2 = 1.0 / (1.0 + math.exp(-logsnr_min))  # sigmoid(lambda_min), a Python float
    sigma2 = 1.0 - alpha2
    log_sigma2 = -math.log1p(math.exp(logsnr_min))  # log sigmoid(-lambda_min)
    per_dim = alpha2 * z_clean.square() + (sigma2 - 1.0 - log_sigma2)
    return 0.5 * per_dim.flatten(1).sum(1)


def prior_elbo(
    denoiser: Denoiser,
    z_clean: Tensor,
    schedule: Schedule,
    *,
    t: Tensor | None = None,
    eps: Tensor | None = None,
) -> Tensor:
    """The latent bitrate L_z in nats per example (UL eq. 3: unweighted prior ELBO, w = 1).

    `schedule` must start at the encoder's noise level, lambda(0) = 5. Gradients flow into
    `z_clean` both through z_t and through the regression target, as the method requires.
    """
    check_input("z_clean", z_clean)
    diffusion = _weighted_diffusion_mse(denoiser, z_clean, schedule, None, t, eps)
    return diffusion + terminal_kl(z_clean, schedule.logsnr_min)


def sigmoid_weight(bias: float) -> Callable[[Tensor], Tensor]:
    # UL eq. 4 weighting: sigmoid(b - lambda), which down-weights the low-noise (high lambda) end
    return lambda logsnr: torch.sigmoid(bias - logsnr)


def decoder_terms(
    denoiser: Callable[[Tensor, Tensor, Tensor], Tensor],
    x: Tensor,
    z0: Tensor,
    schedule: Schedule,
    *,
    loss_factor: float = 1.5,
    bias: float = 0.0,
    t: Tensor | None = None,
    eps: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """(L_x, L_read) per example from one decoder evaluation at the same t and noise.

    L_x is the decoder loss in nats (UL eq. 4, with the sign of dlambda/dt fixed):
    c_lf * E_t[-dlambda/dt * exp(lambda)/2 * sigmoid(b - lambda) * ||x - x_hat(x_t, z0, t)||^2],
    `denoiser(x_t, z0, logsnr) -> x_hat` conditioned on the noisy latent z0. L_read is the stage-1 warm-up's term [ours, docs/STAGE1_DIAGNOSTICS.md]:
    c_lf * (lambda_max - lambda_min) / 2 * E_t[sigmoid(b - lambda) * ||x - x_hat||^2], a
    v-prediction-like weight that stays large at the noisy end, where only z0 can tell the decoder
    what x is. It teaches the decoder to read z0 in tens of steps. It is L_x's integrand without
    exp(lambda) and with -dlambda/dt replaced by its mean over t, so that no draw of t weighs more
    than c_lf * (lambda_max - lambda_min) / 2: with -dlambda/dt itself, the draws at the noisy tail
    weighed thousands of times more than the rest, and the decoder never learned to denoise.
    """
    check_input("x", x)
    check_input("z0", z0)
    if x.shape[0] != z0.shape[0]:
        raise ValueError(f"x and z0 have different batch sizes: {x.shape[0]} vs {z0.shape[0]}")
    sq_err, t = _diffusion_sq_err(
        lambda x_t, logsnr: denoiser(x_t, z0, logsnr), x, schedule, t, eps
    )
    sigmoid = loss_factor * sigmoid_weight(bias)(schedule(t))
    # L_read: the ELBO weight without exp(lambda), -dlambda/dt at its mean over t
    read_weight = (schedule.logsnr_max - schedule.logsnr_min) / 2
    return _elbo_weight(schedule, t) * sigmoid * sq_err, read_weight * sigmoid * sq_err


def context_mask(z: Tensor, context_frames: int) -> Tensor | None:
    """Boolean mask, True on the first `context_frames` latent frames (dim 2 of B x C x T x H x W)."""
    if context_frames == 0:
        return None
    if z.ndim != 5 or not 0 < context_frames < z.shape[2]:
        raise ValueError(
            f"context_frames={context_frames} needs a 5-D latent with more latent frames, "
            f"got shape {tuple(z.shape)}"
        )
    mask = torch.zeros(z.shape[2], dtype=torch.bool, device=z.device)
    mask[:context_frames] = True
    return mask.view(1, 1, -1, 1, 1).expand_as(z)


def base_loss(
    denoiser: Denoiser,
    z_clean: Tensor,
    schedule: Schedule,
    *,
    bias: float = 0.0,
    context_frames: int = 0,
    t: Tensor | None = None,
    eps: Tensor | None = None,
) -> Tensor:
    """Stage-2 base-model loss in nats per example (UL §5: sigmoid-weighted, max log-SNR 5).

    The first `context_frames` latent frames are given clean to the denoiser and excluded from
    the loss (frame prediction).
    """
    check_input("z_clean", z_clean)
    keep = context_mask(z_clean, context_frames)
    return _weighted_diffusion_mse(
        denoiser, z_clean, schedule, sigmoid_weight(bias), t, eps, keep_clean=keep
    )
