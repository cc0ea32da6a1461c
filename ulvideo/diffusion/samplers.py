"""Reverse diffusion in log-SNR space as small functions over a grid (k-diffusion style):
ancestral DDPM and DDIM (UL_METHOD §6, Algorithm 2).

A sampler integrates from `z` at grid[0] to grid[-1] and returns the state there. The base model's
grid ends at lambda = 5, so it returns the noisy z0 the decoder was trained on; the decoder's grid
ends at +inf (`to_data`), where a step returns the prediction itself. Clipping predictions and
pinning context latents are wrappers around the denoiser, not sampler options.
"""

from collections.abc import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .losses import Denoiser
from .schedules import Schedule
from .vp import alpha_sigma

NoiseSampler = Callable[[Tensor], Tensor]


def logsnr_grid(schedule: Schedule, steps: int) -> Tensor:
    """steps+1 log-SNRs from lambda(1) (noisiest) up to lambda(0), uniform in t (float64)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return schedule(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64))


def to_data(grid: Tensor) -> Tensor:
    """The grid with its last log-SNR replaced by +inf: the last step returns x_hat itself."""
    return torch.cat([grid[:-1], grid.new_tensor([float("inf")])])


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


def _steps(grid: Tensor, z: Tensor, progress: bool, name: str):
    # (l_from, l_to, l_from expanded to the batch) per step, in z's dtype and device
    grid = grid.to(device=z.device, dtype=z.dtype)
    for i in tqdm(range(len(grid) - 1), disable=not progress, desc=name, leave=False):
        yield grid[i], grid[i + 1], grid[i].expand(z.shape[0])


@torch.no_grad()
def sample_ddpm(
    denoiser: Denoiser,
    z: Tensor,
    grid: Tensor,
    noise_sampler: NoiseSampler = torch.randn_like,
    progress: bool = False,
) -> Tensor:
    """Ancestral sampling from `z` at grid[0] to grid[-1]; `noise_sampler(z)` draws each step's
    noise (per sample with a StackedRandomGenerator)."""
    for l_from, l_to, logsnr in _steps(grid, z, progress, "ddpm sampling"):
        z = ddpm_step(z, denoiser(z, logsnr), l_from, l_to, noise_sampler(z))
    return z


@torch.no_grad()
def sample_ddim(
    denoiser: Denoiser,
    z: Tensor,
    grid: Tensor,
    noise_sampler: NoiseSampler = torch.randn_like,
    progress: bool = False,
) -> Tensor:
    """Deterministic DDIM from `z` at grid[0] to grid[-1] (`noise_sampler` is not used: the
    signature is every sampler's)."""
    for l_from, l_to, logsnr in _steps(grid, z, progress, "ddim sampling"):
        z = ddim_step(z, denoiser(z, logsnr), l_from, l_to)
    return z


SAMPLERS = {"ddpm": sample_ddpm, "ddim": sample_ddim}


def get_sampler(method: str):
    """The sampler named `method`: "ddpm" (ancestral) or "ddim"."""
    if method not in SAMPLERS:
        raise ValueError(f"method must be one of {sorted(SAMPLERS)}, got {method!r}")
    return SAMPLERS[method]


def clip_denoiser(denoiser: Denoiser, low: float = -1.0, high: float = 1.0) -> Denoiser:
    """Predictions clipped to [low, high] (pixels live in [-1, 1])."""
    return lambda z, logsnr: denoiser(z, logsnr).clamp(low, high)


def pin_context(denoiser: Denoiser, clean: Tensor, keep: Tensor) -> Denoiser:
    """Where `keep` is True the denoiser sees, and predicts, the given `clean` latents: frame
    prediction from context frames."""

    def pinned(z: Tensor, logsnr: Tensor) -> Tensor:
        return torch.where(keep, clean, denoiser(torch.where(keep, clean, z), logsnr))

    return pinned
