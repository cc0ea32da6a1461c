"""Reverse diffusion in log-SNR space as small functions over a grid (k-diffusion style):
ancestral DDPM and DDIM (UL_METHOD §6, Algorithm 2).

A sampler integrates from `z` at grid[0] to grid[-1] and returns the state there. The base model's
grid ends at lambda = 5, so it returns the noisy z0 the decoder was trained on; the decoder's grid
ends at +inf (`to_data`), where a step returns the prediction itself. Clipping predictions and
pinning context latents are wrappers around the denoiser, not sampler options. Sampling in
overlapping windows (sample_windows) runs the same steps frame by frame.
"""

import math
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


def _ddpm_update(z, x_hat, l_from, l_to, noise_sampler: NoiseSampler) -> Tensor:
    return ddpm_step(z, x_hat, l_from, l_to, noise_sampler(z))


def _ddim_update(z, x_hat, l_from, l_to, noise_sampler: NoiseSampler) -> Tensor:
    return ddim_step(z, x_hat, l_from, l_to)  # deterministic: draws no noise


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
        z = _ddpm_update(z, denoiser(z, logsnr), l_from, l_to, noise_sampler)
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
        z = _ddim_update(z, denoiser(z, logsnr), l_from, l_to, noise_sampler)
    return z


SAMPLERS = {"ddpm": sample_ddpm, "ddim": sample_ddim}
_UPDATES = {"ddpm": _ddpm_update, "ddim": _ddim_update}


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


# A region (slices of the trailing dims) and its blend weights there: one 1-D tensor per sliced
# dim, the weight of an element their product (never materialised for all windows at once)
Window = tuple[tuple[slice, ...], tuple[Tensor, ...]]


def window_starts(length: int, window: int, overlap: int) -> list[int]:
    """Starts of the fewest windows of `window` covering range(length), spread evenly, neighbours
    sharing at least `overlap` (0 <= overlap < window)."""
    if window >= length:
        return [0]
    if not 0 <= overlap < window:
        raise ValueError(f"a window overlap must be in [0, window={window}), got {overlap}")
    count = math.ceil((length - window) / (window - overlap)) + 1
    return [round(i * (length - window) / (count - 1)) for i in range(count)]


def ramp_weights(size: int, ramp: int, left: bool, right: bool) -> Tensor:
    """Blend weights over a window of `size`: 1 inside, rising as a raised cosine over `ramp`
    elements on each side that meets a neighbour (`left`, `right`), never 0 (float64). Two
    neighbours sharing `ramp` elements have weights summing to 1 there."""
    # Raised-cosine (Hann) crossfade sin^2(pi x / 2), x = (i + 1) / (ramp + 1): flat at both ends,
    # so a window enters at weight sin^2(pi / (2 ramp + 2)) (0.05 for ramp 6; a linear ramp's
    # 1 / (ramp + 1) = 0.14 made the seams rougher) where its prediction has the least context
    i = torch.arange(size, dtype=torch.float64)
    w = torch.ones(size, dtype=torch.float64)
    for side, distance in ((left, i + 1), (right, size - i)):
        if side:
            x = (distance / (ramp + 1)).clamp(max=1)
            w = torch.minimum(w, torch.sin(math.pi / 2 * x).square())
    return w


def randn_frames(z: Tensor, noise_sampler: NoiseSampler = torch.randn_like) -> Tensor:
    """z filled in place with noise drawn frame by frame (dim 2) in order, as sample_windows
    draws its steps' noise: the draws do not depend on how the frames are windowed."""
    for f in range(z.shape[2]):
        z[:, :, f] = noise_sampler(z[:, :, f])
    return z


@torch.no_grad()
def sample_windows(
    method: str,
    window_denoiser: Callable[[Tensor, Tensor, int], Tensor],
    windows: list[Window],
    z: Tensor,
    grid: Tensor,
    noise_sampler: NoiseSampler = torch.randn_like,
    progress: bool = False,
) -> Tensor:
    """The sampler `method` over overlapping windows: `window_denoiser(z[window k], logsnr, k)`
    predicts window k, and each step uses the per-element weighted average of the predictions.

    MultiDiffusion (Bar-Tal et al. 2023, eq. 5) averages the windows' next states; a step is
    affine in x_hat, so averaging x_hat inside every step is the same update. The windows'
    regions (see Window) must cover z, listed with non-decreasing frame (dim 2) slices. Frames
    are streamed: a frame is stepped, in place in z, once the last window covering it has
    predicted, and its noise is drawn on its own, in frame order (randn_frames). So beyond z the
    memory is one window's frames (its accumulator), and the result does not depend on the
    windows where they all predict the same. Returns z.
    """
    get_sampler(method)  # a clear error for an unknown method
    update = _UPDATES[method]
    groups = {}  # frame span (start, stop) -> [(k, its other slices, its weights per dim)]
    for k, ((span, *rest), axes) in enumerate(windows):
        groups.setdefault((span.start, span.stop), []).append((k, tuple(rest), axes))
    spans, frames = list(groups), z.shape[2]
    gaps = [a[1] < b[0] or b[1] < a[1] for a, b in zip(spans, spans[1:])]
    if spans[0][0] != 0 or spans[-1][1] != frames or any(gaps):
        raise ValueError(f"windows must cover the {frames} frames in order, got spans {spans}")
    every = (slice(None), slice(None))
    for l_from, l_to, logsnr in _steps(grid, z, progress, f"{method} sampling"):
        total = weight = None
        for j, ((lo, hi), members) in enumerate(groups.items()):
            start = spans[j - 1][0] if j else lo  # the frame the carried buffers begin at
            total = _slide(total, lo - start, z.new_zeros(*z.shape[:2], hi - lo, *z.shape[3:]))
            weight = _slide(weight, lo - start, z.new_zeros(1, 1, hi - lo, *z.shape[3:]))
            for k, rest, axes in members:
                w = _outer(axes, z)
                region = (*every, slice(None), *rest)
                total[region] += w * window_denoiser(z[(*every, slice(lo, hi), *rest)], logsnr, k)
                weight[region] += w
            for f in range(lo, spans[j + 1][0] if j + 1 < len(spans) else frames):
                x_hat = total[:, :, f - lo] / weight[:, :, f - lo]
                z[:, :, f] = update(z[:, :, f], x_hat, l_from, l_to, noise_sampler)
    return z


def _outer(axes: tuple[Tensor, ...], like: Tensor) -> Tensor:
    # the weights of a window's region: the outer product of its per-dim weights, in like's dtype
    w = like.new_ones(())
    for v in axes:
        w = w.unsqueeze(-1) * v.to(like)
    return w


def _slide(old: Tensor | None, shift: int, new: Tensor) -> Tensor:
    # `new` holding `old`'s frames (dim 2) from `shift` on: a window buffer moved forward
    if old is not None:
        new[:, :, : old.shape[2] - shift] = old[:, :, shift:]
    return new
