"""Pure diffusion math: VP process, schedules, UL losses, bitrate and samplers (no nn.Module state)."""

from .bitrate import bits_per_latent_dim, bits_per_pixel
from .losses import (
    base_loss,
    context_mask,
    decoder_loss,
    decoder_terms,
    prior_elbo,
    sigmoid_weight,
    terminal_kl,
)
from .noise import StackedRandomGenerator, randn_like, sample_seed
from .samplers import (
    SAMPLERS,
    clip_denoiser,
    ddim_step,
    ddpm_step,
    get_sampler,
    logsnr_grid,
    multidiffusion,
    pin_context,
    ramp_weights,
    sample_ddim,
    sample_ddpm,
    to_data,
    window_starts,
)
from .schedules import LinearLogSNR, Schedule, ShiftedCosine, stratified_t
from .vp import alpha_sigma, diffuse, eps_to_x, expand_to, v_to_x, x_to_eps, x_to_v

__all__ = [
    "SAMPLERS",
    "clip_denoiser",
    "get_sampler",
    "pin_context",
    "to_data",
    "multidiffusion",
    "ramp_weights",
    "window_starts",
    "LinearLogSNR",
    "Schedule",
    "StackedRandomGenerator",
    "ShiftedCosine",
    "alpha_sigma",
    "base_loss",
    "bits_per_latent_dim",
    "bits_per_pixel",
    "context_mask",
    "ddim_step",
    "ddpm_step",
    "decoder_loss",
    "decoder_terms",
    "diffuse",
    "eps_to_x",
    "expand_to",
    "logsnr_grid",
    "prior_elbo",
    "randn_like",
    "sample_ddim",
    "sample_ddpm",
    "sample_seed",
    "sigmoid_weight",
    "stratified_t",
    "terminal_kl",
    "v_to_x",
    "x_to_eps",
    "x_to_v",
]
