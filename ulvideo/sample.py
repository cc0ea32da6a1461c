"""UL Algorithm 2: base model from noise to z0 at lambda = 5, then the decoder to pixels.

Classifier-free guidance for class labels and frame prediction from given context frames. On a
KL stage 1's latents (the comparison arm) the base model runs down to clean latents instead
(lambda -> +inf), which are divided by the base model's latent multiplier (ulvideo.latent_scale.LatentScaling) and decoded.
"""

from dataclasses import dataclass, replace
from functools import partial

import torch
from torch import Tensor

from .diffusion import (
    StackedRandomGenerator,
    check_grid,
    context_mask,
    get_sampler,
    latent_frames_of,
    logsnr_grid,
    pin_context,
    randn_like,
    to_data,
)
from .geometry import frame_size
from .student import decoder_steps


@dataclass
class SamplingConfig:
    """Settings shared by the CLI, the demo and the evaluation protocol."""

    # 16 ancestral steps: on the demo's models within 5% of 64 steps' FVD and class accuracy
    # (docs/RESULTS.md, fast sampling); 8 steps, and every deterministic sampler, fell short
    base_steps: int = 16
    # None: the distilled student's own steps when the export has one, else the teacher's 64
    # (ulvideo.student.decoder_steps)
    decoder_steps: int | None = None
    # the sampler (ulvideo.diffusion.METHODS: ddpm = euler-ancestral, ddim, heun, dpmpp-2m) and
    # its grid spacing (GRIDS: uniform in t, in log-SNR, or EDM's rho = 7 "karras"), both models
    method: str = "ddpm"
    grid: str = "t"
    cfg_scale: float = 1.0  # 1 = the conditional model alone
    batch_size: int = 16
    seed: int = 0
    progress: bool = False
    window: int | None = None  # 1 + 4k pixel frames: generate and decode window by window
    window_context: int = 5  # 1 + 4k pixel frames: each generated window continues the last ones
    tile: int | None = None  # decode in tiles of this many pixels
    decoder: str = "auto"  # auto | student | teacher (the distilled one: ulvideo.student)

    def __post_init__(self):
        get_sampler(self.method)  # clear errors for unknown names before any work
        check_grid(self.grid)


def guided_denoiser(base, labels: Tensor | None, cfg_scale: float, context_frames: int):
    # CFG (Ho & Salimans 2022) in x-space: x_u + w (x_c - x_u); w = 1 is the conditional model
    if labels is None or cfg_scale == 1.0:
        return lambda z, logsnr: base(z, logsnr, labels=labels, context_frames=context_frames)
    null = torch.full_like(labels, base.num_classes)

    def denoise(z, logsnr):
        both = base(
            torch.cat([z, z]),
            torch.cat([logsnr, logsnr]),
            labels=torch.cat([labels, null]),
            context_frames=context_frames,
        )
        cond, uncond = both.chunk(2)
        return uncond + cfg_scale * (cond - uncond)

    return denoise


@torch.no_grad()
def sample_z0(
    ul,
    base,
    latent_shape: tuple[int, ...],
    sampling: SamplingConfig,
    *,
    labels: Tensor | None = None,
    context_latents: Tensor | None = None,
    rng: StackedRandomGenerator | None = None,
    latent_multiplier: float = 1.0,
) -> Tensor:
    """Reverse diffusion of the base model from N(0, I), stopped at lambda = 5 (noisy z0); for
    a KL stage 1 run to the clean latent and divided by `latent_multiplier` (LatentScaling), the
    latent the decoder takes."""
    device = next(base.parameters()).device
    batch = len(labels) if labels is not None else sampling.batch_size
    if context_latents is not None:
        batch = context_latents.shape[0]
    noise = randn_like(torch.empty((batch, *latent_shape), device=device), rng)
    latent_context = 0 if context_latents is None else context_latents.shape[2]
    denoiser = guided_denoiser(base, labels, sampling.cfg_scale, latent_context)
    if latent_context:
        keep = context_mask(noise, latent_context)
        clean = torch.zeros_like(noise)
        clean[:, :, :latent_context] = context_latents
        denoiser = pin_context(denoiser, clean * latent_multiplier, keep)
    # ends at lambda(0) = 5: UL Alg. 2's z0
    grid = logsnr_grid(ul.latent_schedule, sampling.base_steps, sampling.grid)
    if ul.config.regularizer == "kl":
        grid = to_data(grid)  # KL latents are decoded clean, as LDM's
    z0 = get_sampler(sampling.method)(
        denoiser,
        noise,
        grid,
        noise_sampler=partial(randn_like, rng=rng),
        progress=sampling.progress,
    )
    z0 = z0 / latent_multiplier
    # UL's decoder was trained on noisy latents: noise the given frames to lambda = 5 too
    if latent_context:
        z0 = torch.where(keep, ul.noisy_latent(clean, rng), z0)
    return z0


@torch.no_grad()
def sample_long_z0(
    ul,
    base,
    latent_shape: tuple[int, ...],
    sampling: SamplingConfig,
    latent_window: int,
    latent_context: int,
    *,
    labels: Tensor | None = None,
    context_latents: Tensor | None = None,
    rng: StackedRandomGenerator | None = None,
    latent_multiplier: float = 1.0,
) -> Tensor:
    """z0 of any length by frame prediction, `latent_window` latent frames at a time: each window
    after the first is conditioned on the last `latent_context` latent frames of the clip so far
    (their noisy z0, as given context [ours]), and adds latent_window - latent_context new ones."""
    channels, latent_frames, height, width = latent_shape
    z0 = sample_z0(
        ul, base, (channels, min(latent_window, latent_frames), height, width), sampling,
        labels=labels, context_latents=context_latents, rng=rng, latent_multiplier=latent_multiplier,
    )  # fmt: skip
    while z0.shape[2] < latent_frames:
        new = min(latent_window - latent_context, latent_frames - z0.shape[2])
        nxt = sample_z0(
            ul, base, (channels, latent_context + new, height, width), sampling,
            labels=labels, context_latents=z0[:, :, -latent_context:], rng=rng,
            latent_multiplier=latent_multiplier,
        )  # fmt: skip
        z0 = torch.cat([z0, nxt[:, :, latent_context:]], dim=2)
    return z0


@torch.no_grad()
def generate(
    ul,
    base,
    num_videos: int,
    frames: int,
    resolution: int | tuple[int, int],
    sampling: SamplingConfig,
    *,
    labels: Tensor | None = None,
    context: Tensor | None = None,
    indices: Tensor | None = None,
    student=None,
    latent_multiplier: float = 1.0,
) -> Tensor:
    """Sample `num_videos` videos (B x C x T x H x W in [-1, 1]) in batches of
    sampling.batch_size; `frames` (pixel frames, 1 + 4k) long, `resolution` a side (square) or
    (H, W).

    Video k's noise depends only on (sampling.seed, indices[k]) (default index k), never on the
    batch it is drawn in nor on the process drawing it. With sampling.window (pixel frames)
    shorter than the clip, the base model extends it window by window (sample_long_z0, each
    window continuing the last sampling.window_context frames) and the decoder runs in blended
    windows: memory bounded by the window, any length. `labels` (B,) conditions on classes;
    `context` (B x C x T_ctx x H x W, T_ctx = 1 + 4k real frames) turns it into frame
    prediction: the context latents stay fixed and the real context frames are pasted into the
    output. `student` (ulvideo.student.Student) decodes instead of the
    stage-1 decoder. `latent_multiplier`: LatentScaling's, as Pipeline.latent_multiplier gives it.
    """
    height, width = frame_size(resolution)
    latent_shape = ul.latent_shape(frames, height, width)
    td = ul.config.temporal_downsample
    window, context_frames = sampling.window, sampling.window_context
    latent_window = latent_shape[1] if window is None else latent_frames_of(window, td)
    latent_context = 0
    if latent_window < latent_shape[1]:
        latent_context = latent_frames_of(context_frames, td, "window_context", least=1)
        if base.given_embed is None or latent_context >= latent_window:
            raise ValueError(
                f"generating {frames} frames in windows of {window} needs a base model trained "
                f"with context (BaseConfig.context) and window_context={context_frames} frames "
                f"fewer than the window"
            )
    if labels is not None:
        if base.num_classes == 0:
            raise ValueError("this base model is unconditional: sample without labels")
        if labels.min() < 0 or labels.max() > base.num_classes:  # checked once, not per step
            raise ValueError(
                f"labels must lie in [0, {base.num_classes}] ({base.num_classes} = the null class), "
                f"got {labels.tolist()}"
            )
    device = next(base.parameters()).device
    indices = torch.arange(num_videos) if indices is None else indices
    steps = decoder_steps(student, sampling.decoder_steps)
    if len(indices) != num_videos:
        raise ValueError(f"give one sample index per video: {len(indices)} for {num_videos}")
    out = []
    for start in range(0, num_videos, sampling.batch_size):
        sl = slice(start, min(start + sampling.batch_size, num_videos))
        n = sl.stop - sl.start
        y = labels[sl].to(device) if labels is not None else None
        ctx_latents = None
        if context is not None:
            ul.validate_video(context[sl])
            ctx_latents = ul.encode(context[sl].to(device))
        batch = replace(sampling, batch_size=n)
        rng = StackedRandomGenerator(device, sampling.seed, indices[sl].tolist())
        z0 = sample_long_z0(
            ul, base, latent_shape, batch, latent_window, latent_context, labels=y,
            context_latents=ctx_latents, rng=rng, latent_multiplier=latent_multiplier,
        )  # fmt: skip
        video = ul.decode(
            z0, steps, sampling.method, rng, sampling.progress, window=window,
            tile=sampling.tile, grid=sampling.grid, student=student,
        )  # fmt: skip
        if context is not None:
            video[:, :, : context.shape[2]] = context[sl].to(device)
        out.append(video.cpu())
    return torch.cat(out)


def frame_predictor(
    ul, base, sampling: SamplingConfig, student=None, latent_multiplier: float = 1.0
):
    """`generate(context, num_frames, labels, sample_ids)` for ulvideo.evaluate.k600: frame prediction
    from a stage-2 model. Sample i's noise depends only on (sampling.seed, i), so the clips
    scored are the same whatever the batch size and the number of processes."""

    def predict(context: Tensor, num_frames: int, labels: Tensor, sample_ids: Tensor) -> Tensor:
        run = replace(sampling, batch_size=len(context))
        y = labels.long() if base.num_classes else None
        video = generate(
            ul, base, len(context), num_frames, tuple(context.shape[-2:]), run,
            labels=y, context=context, indices=sample_ids.cpu(), student=student,
            latent_multiplier=latent_multiplier,
        )  # fmt: skip
        return video.to(context.device)

    return predict
