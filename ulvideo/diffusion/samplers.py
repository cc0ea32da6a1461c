"""Reverse diffusion in log-SNR space: ancestral DDPM and DDIM (UL_METHOD §6, Algorithm 2)."""

from collections.abc import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .losses import Denoiser
from .schedules import Schedule
from .vp import alpha_sigma


def logsnr_grid(schedule: Schedule, steps: int, logsnr_end: float | None = None) -> Tensor:
    """steps+1 log-SNRs from lambda(1) (noisiest) up to `logsnr_end` (default lambda(0)), uniform in t."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    t_end = 0.0 if logsnr_end is None else float(schedule.inverse(torch.tensor(logsnr_end)))
    t = torch.linspace(1.0, t_end, steps + 1, dtype=torch.float64)
    grid = schedule(t)
    if logsnr_end is not None:
        grid[-1] = logsnr_end
    return grid


def ddpm_step(z: Tensor, x_hat: Tensor, l_from: Tensor, l_to: Tensor, noise: Tensor) -> Tensor:
    # Ancestral step q(z_to | z_from, x = x_hat), l_to > l_from (VDM, Kingma et al. 2021, eq. 33)
    ratio = torch.exp(l_from - l_to)  # SNR_from / SNR_to < 1
    a_from, _ = alpha_sigma(l_from)
    a_to, s_to = alpha_sigma(l_to)
    c = -torch.expm1(l_from - l_to)
    mean = ratio * (a_to / a_from) * z + c * a_to * x_hat
    return mean + (c * s_to.square()).sqrt() * noise


def ddim_step(z: Tensor, x_hat: Tensor, l_from: Tensor, l_to: Tensor) -> Tensor:
    # Deterministic DDIM step: z_to = alpha_to x_hat + sigma_to eps_hat (Song et al. 2021)
    a_from, s_from = alpha_sigma(l_from)
    a_to, s_to = alpha_sigma(l_to)
    eps_hat = (z - a_from * x_hat) / s_from
    return a_to * x_hat + s_to * eps_hat


def sample(
    denoiser: Denoiser,
    noise: Tensor,
    schedule: Schedule,
    steps: int,
    *,
    method: str = "ddpm",
    logsnr_end: float | None = None,
    return_denoised: bool = True,
    clean: Tensor | None = None,
    keep_clean: Tensor | None = None,
    noise_sampler: Callable[[Tensor], Tensor] = torch.randn_like,
    progress: bool = False,
    x_hat_transform: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Integrate the reverse process from z_1 = `noise` up to `logsnr_end`.

    With `return_denoised` the final prediction x_hat is returned (the decoder to pixels); without
    it the noisy state at `logsnr_end` is returned (the base model stops at lambda = 5 and hands
    z0 to the decoder, UL Algorithm 2). Where `keep_clean` is True, the state is pinned to `clean`
    (given context frames). `noise_sampler(z)` draws the ancestral noise (per sample with a
    StackedRandomGenerator). `x_hat_transform` post-processes predictions (e.g. clipping to [-1, 1]).
    """
    if method not in ("ddpm", "ddim"):
        raise ValueError(f"method must be 'ddpm' or 'ddim', got {method!r}")
    grid = logsnr_grid(schedule, steps, logsnr_end).to(noise.device)
    z = noise
    x_hat = noise
    batch = noise.shape[0]
    for i in tqdm(range(steps), disable=not progress, desc=f"{method} sampling", leave=False):
        l_from, l_to = grid[i], grid[i + 1]
        if keep_clean is not None:
            z = torch.where(keep_clean, clean, z)
        x_hat = denoiser(z, l_from.to(noise.dtype).expand(batch))
        if x_hat_transform is not None:
            x_hat = x_hat_transform(x_hat)
        lf, lt = l_from.to(noise.dtype), l_to.to(noise.dtype)
        if method == "ddpm":
            z = ddpm_step(z, x_hat, lf, lt, noise_sampler(z))
        else:
            z = ddim_step(z, x_hat, lf, lt)
    out = x_hat if return_denoised else z
    if keep_clean is not None:
        out = torch.where(keep_clean, clean, out)
    return out
