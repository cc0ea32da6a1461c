"""Windows over long and large videos (docs/LONG_VIDEOS.md), the one home of their geometry and
their sampler: pixel <-> latent spans under the causal compression (1 + t k frames -> 1 + k
latent frames, s k pixels -> k latent pixels), where windows start, how much neighbours share,
their blend weights, the decoder's windows, the streamed encoder's chunks, the prior's chunks;
and sample_windows, a sampler's stages run over overlapping windows (MultiDiffusion).

Users give windows in pixel frames / pixels; the latent counts derived from them are named
latent_*.
"""

import itertools
import math
from collections.abc import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .samplers import NoiseSampler, sampler_stages

# A region (slices of the trailing dims) and its blend weights there: one 1-D tensor per sliced
# dim, the weight of an element their product (never materialised for all windows at once)
Window = tuple[tuple[slice, ...], tuple[Tensor, ...]]


def latent_span(name: str, value: int, step: int, offset: int, least: int = 1) -> int:
    """The latent elements of a window of `value` pixel frames (offset 1: 1 + step k frames ->
    1 + k) or pixels (offset 0: step k pixels -> k), at least `least`; a ValueError naming the
    nearest valid values otherwise."""
    smallest = step * (least - offset) + offset  # the span of `least` latent elements
    if value < smallest or (value - offset) % step:
        form = f"1 + {step}k frames" if offset else f"a multiple of {step} pixels"
        below = max(smallest, offset + (value - offset) // step * step)
        fix = f"{below} or {below + step}" if below < value else str(below)
        raise ValueError(f"{name}={value}: windows take {form}, at least {smallest}; use {fix}")
    return (value - offset) // step + offset


def latent_frames_of(
    frames: int, temporal_downsample: int, name: str = "window", least: int = 2
) -> int:
    """The latent frames of `frames` pixel frames (1 + t k) of a window (the setting `name`), at
    least `least` of them."""
    return latent_span(name, frames, temporal_downsample, 1, least)


def encode_chunks(frames: int, window: int, temporal_downsample: int) -> list[slice]:
    """The pixel frames the streamed causal encoder takes at a time: the first `window`
    (1 + t k), then window - 1 = t k at a time, so each latent frame is made once."""
    latent_frames_of(window, temporal_downsample)
    bounds = [0, *range(window, frames, window - 1), frames]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


def latent_chunks(latent_frames: int, window: int, temporal_downsample: int) -> list[slice]:
    """Consecutive chunks of the latent frames of a `window` (pixel frames) covering
    `latent_frames`: the prior's windowed rate codes each as a clip of its own."""
    span = latent_frames_of(window, temporal_downsample)
    return [slice(a, a + span) for a in range(0, latent_frames, span)]


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


def default_overlap(window: int, scale: int, trim: int, least: int) -> int:
    """The fewest latent elements whose pixels (scale o - trim) are at least half the window's
    (scale w - trim), at most window - 1: every element between the clip's ends is blended from
    two windows (one that a single window decides is rougher than a blended one: the seam
    test)."""
    return max(least, min(window - 1, -(-(scale * window + trim) // (2 * scale))))


def axis_windows(length: int, window: int, overlap: int, scale: int, trim: int) -> list:
    """(latent slice, pixel slice, pixel blend weights) of the windows along one axis of
    `length` latent elements: latent [a, b) decodes pixels [scale a, scale b - trim), and
    `overlap` shared latent elements share scale overlap - trim pixels."""
    out = []
    for a in window_starts(length, window, overlap):
        b = min(a + window, length)
        size, ramp = scale * (b - a) - trim, max(0, scale * overlap - trim)
        weights = ramp_weights(size, ramp, left=a > 0, right=b < length)
        out.append((slice(a, b), slice(scale * a, scale * b - trim), weights))
    return out


def decode_windows(
    latent_grid: tuple[int, int, int],
    temporal_downsample: int,
    spatial_downsample: int,
    *,
    window: int | None = None,
    overlap: int | None = None,
    tile: int | None = None,
    tile_overlap: int | None = None,
) -> list[tuple[tuple[slice, ...], Window]]:
    """The decoder's windows on a T_z x H_z x W_z latent grid: (latent region, (pixel region,
    blend weights per axis)) each. `window` and `overlap` are pixel frames (1 + t k), `tile` and
    `tile_overlap` pixels (multiples of s); None covers an axis whole, and the overlaps default
    to default_overlap. Latent frames [a, b) decode pixel frames [t a, t (b - 1)] and latent rows
    [a, b) pixel rows [s a, s b) (t, s: the temporal and spatial downsampling)."""
    td, sd = temporal_downsample, spatial_downsample
    t_z, h_z, w_z = latent_grid
    frames = t_z if window is None else latent_frames_of(window, td)
    shared_frames = default_overlap(frames, td, td - 1, least=1)
    if overlap is not None:
        shared_frames = latent_span("overlap", overlap, td, 1)
    if frames < t_z and not 1 <= shared_frames < frames:
        raise ValueError(
            f"overlap={overlap} for window={window} frames: neighbouring windows share "
            f"1 + {td}k frames, fewer than the window (which needs at least {1 + td} frames)"
        )
    side = None if tile is None else latent_span("tile", tile, sd, 0)
    shared_side = 0 if side is None else default_overlap(side, sd, 0, least=0)
    if tile_overlap is not None:
        shared_side = latent_span("tile_overlap", tile_overlap, sd, 0, least=0)
    if side is not None and shared_side >= side:
        raise ValueError(f"tile_overlap={tile_overlap} must be smaller than tile={tile}")
    axes = [
        axis_windows(t_z, frames, shared_frames, td, trim=td - 1),
        axis_windows(h_z, side or h_z, shared_side, sd, trim=0),
        axis_windows(w_z, side or w_z, shared_side, sd, trim=0),
    ]
    out = []
    for (lt, pt, wt), (lh, ph, wh), (lw, pw, ww) in itertools.product(*axes):
        out.append(((lt, lh, lw), ((pt, ph, pw), (wt, wh, ww))))
    return out


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
    predicts window k, and each network evaluation uses the per-element weighted average of the
    predictions.

    MultiDiffusion (Bar-Tal et al. 2023, eq. 5) averages the windows' next states; every stage's
    update is affine in x_hat, so averaging x_hat inside every stage is the same update. The
    windows' regions (see Window) must cover z, listed with non-decreasing frame (dim 2) slices.
    Frames are streamed: a frame is updated, in place in z, once the last window covering it has
    predicted, its noise drawn on its own, in frame order (randn_frames), and its method state
    kept per frame. So beyond z the memory is one window's frames (its accumulator) plus the
    methods' history: none for ddpm, euler-ancestral and ddim, one clip's worth of frames for
    dpmpp-2m (the previous predictions), two for heun (its predictor), whose two evaluations a
    step are two streamed passes. The result does not depend on the windows where they all
    predict the same. Returns z.
    """
    stages = sampler_stages(method, grid, z)
    groups = {}  # frame span (start, stop) -> [(k, its other slices, its weights per dim)]
    for k, ((span, *rest), axes) in enumerate(windows):
        groups.setdefault((span.start, span.stop), []).append((k, tuple(rest), axes))
    spans, frames = list(groups), z.shape[2]
    gaps = [a[1] < b[0] or b[1] < a[1] for a, b in zip(spans, spans[1:])]
    if spans[0][0] != 0 or spans[-1][1] != frames or any(gaps):
        raise ValueError(f"windows must cover the {frames} frames in order, got spans {spans}")
    every = (slice(None), slice(None))
    states = [None] * frames  # each frame's history, this call's alone
    for logsnr, update in tqdm(stages, disable=not progress, desc=method, leave=False):
        logsnr = logsnr.expand(z.shape[0])
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
                z[:, :, f], states[f] = update(z[:, :, f], x_hat, states[f], noise_sampler)
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
