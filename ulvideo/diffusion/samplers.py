"""Reverse diffusion in log-SNR space as small functions over a grid (k-diffusion style):
ancestral DDPM (= Euler-ancestral), DDIM, EDM's Heun and DPM-Solver++(2M) (UL_METHOD §6).

A sampler integrates from `z` at grid[0] to grid[-1] and returns the state there. The base model's
grid ends at lambda = 5, so it returns the noisy z0 the decoder was trained on; the decoder's grid
ends at +inf (`to_data`), where a step returns the prediction itself. Grids (`logsnr_grid`) are
uniform in t ("t"), in lambda ("logsnr") or EDM's rho = 7 in sigma ("karras").

Every method is a list of stages, one per network evaluation: the log-SNR to evaluate at and an
update `(z, x_hat, state, noise_sampler) -> (z, state)` that is elementwise, so it can run on any
part of z. `state` is the method's history for those elements (DPM-Solver++'s previous prediction,
Heun's predictor), created per call, never shared between calls. The plain samplers run the
stages over the whole z; sample_windows runs the same stages frame by frame. Clipping predictions
and pinning context latents are wrappers around the denoiser, not sampler options.
"""

import math
from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .losses import Denoiser
from .schedules import Schedule
from .vp import alpha_sigma

NoiseSampler = Callable[[Tensor], Tensor]
# (z, x_hat, state, noise_sampler) -> (z, state): one stage's elementwise update
Update = Callable[[Tensor, Tensor, object, NoiseSampler], tuple[Tensor, object]]

GRIDS = ("t", "logsnr", "karras")
KARRAS_RHO = 7.0  # EDM (Karras et al. 2022, eq. 5)


def check_grid(grid: str) -> str:
    if grid not in GRIDS:
        raise ValueError(f"grid must be one of {list(GRIDS)}, got {grid!r}")
    return grid


def logsnr_grid(schedule: Schedule, steps: int, grid: str = "t") -> Tensor:
    """steps+1 log-SNRs from lambda(1) (noisiest) up to exactly lambda(0) (float64), spaced
    uniformly in t ("t"), in lambda ("logsnr"), or as EDM's rho = 7 grid in the variance-exploding
    sigma = exp(-lambda / 2) ("karras")."""
    check_grid(grid)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    u = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    low, high = float(schedule.logsnr_min), float(schedule.logsnr_max)
    if grid == "t":
        out = schedule(1.0 - u)
    elif grid == "logsnr":
        out = low + u * (high - low)
    else:  # EDM eq. 5: sigma_i^(1/rho) uniform from sigma_max to sigma_min
        root = lambda lam: math.exp(-lam / (2 * KARRAS_RHO))  # noqa: E731
        out = -2 * KARRAS_RHO * torch.log(root(low) + u * (root(high) - root(low)))
    out[0], out[-1] = low, high  # the ends exactly (the base model must stop at lambda = 5)
    return out


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


def dpmpp_2m_step(
    z: Tensor, x_hat: Tensor, x_prev: Tensor | None, l_prev: Tensor | None, l_from, l_to
) -> Tensor:
    # DPM-Solver++(2M) (Lu et al. 2022, arXiv 2211.01095, Alg. 2), data prediction, in their
    # lambda = log(alpha / sigma), half of ours: h = (l_to - l_from) / 2.
    # z_to = (s_to / s_from) z - a_to expm1(-h) D, D = (1 + 1/2r) x_hat - 1/2r x_prev, r = h_prev / h.
    # Without history (l_prev None: the first step, and the step to the data, h = inf) D = x_hat:
    # the first-order step, which is DDIM's.
    a_from, s_from = alpha_sigma(l_from)
    a_to, s_to = alpha_sigma(l_to)
    d = x_hat
    if l_prev is not None:
        c = (l_to - l_from) / (2 * (l_from - l_prev))  # 1 / (2 r)
        d = (1 + c) * x_hat - c * x_prev
    return (s_to / s_from) * z - a_to * torch.expm1((l_from - l_to) / 2) * d


def _ve(l: Tensor) -> tuple[Tensor, Tensor]:
    # (alpha, sigma_VE): the variance-exploding view x = z / alpha, sigma = exp(-lambda / 2)
    return alpha_sigma(l)[0], torch.exp(-l / 2)


# ---------------------------------------------------------------- the methods as stages


def _ddpm_update(l_from, l_to, z, x_hat, state, noise_sampler: NoiseSampler):
    return ddpm_step(z, x_hat, l_from, l_to, noise_sampler(z)), None


def _ddim_update(l_from, l_to, z, x_hat, state, noise_sampler: NoiseSampler):
    return ddim_step(z, x_hat, l_from, l_to), None  # deterministic: draws no noise


def _dpmpp_2m_update(l_prev, l_from, l_to, z, x_hat, x_prev, noise_sampler: NoiseSampler):
    # the state is the previous step's prediction of these elements: the multistep history
    return dpmpp_2m_step(z, x_hat, x_prev, l_prev, l_from, l_to), x_hat


def _heun_predict(l_from, l_to, z, x_hat, state, noise_sampler: NoiseSampler):
    # EDM Alg. 1 (Karras et al. 2022) without churn, in the VE form x = z / alpha, dx/dsigma =
    # (x - D) / sigma: the Euler predictor, keeping (x, d) for the corrector
    (a_from, s_from), (a_to, s_to) = _ve(l_from), _ve(l_to)
    x = z / a_from
    d = (x - x_hat) / s_from
    return a_to * (x + (s_to - s_from) * d), (x, d)


def _heun_correct(l_from, l_to, z, x_hat, state, noise_sampler: NoiseSampler):
    # EDM Alg. 1 lines 9-11: the trapezoidal rule with the slope at the predicted point
    x, d = state
    (_, s_from), (a_to, s_to) = _ve(l_from), _ve(l_to)
    d_to = (z / a_to - x_hat) / s_to
    return a_to * (x + (s_to - s_from) * (d + d_to) / 2), None


def _to_data(l_from, l_to, z, x_hat, state, noise_sampler: NoiseSampler):
    # EDM's last step to sigma = 0 is Euler: x + (0 - sigma) (x - D) / sigma = D
    return x_hat, None


def _stages(method: str, grid: Tensor, like: Tensor) -> list[tuple[Tensor, Update]]:
    """(log-SNR to evaluate the denoiser at, the update with its prediction) per network
    evaluation of `method` over `grid`, in like's device and dtype (branches decided on the
    host once: no syncs while sampling)."""
    get_sampler(method)  # a clear error for an unknown method
    finite = [math.isfinite(v) for v in grid.tolist()]
    grid = grid.to(device=like.device, dtype=like.dtype)
    out = []
    for i in range(len(grid) - 1):
        l_from, l_to = grid[i], grid[i + 1]
        if method in ("ddpm", "euler-ancestral"):
            out.append((l_from, partial(_ddpm_update, l_from, l_to)))
        elif method == "ddim":
            out.append((l_from, partial(_ddim_update, l_from, l_to)))
        elif method == "dpmpp-2m":
            l_prev = grid[i - 1] if i and finite[i + 1] else None
            out.append((l_from, partial(_dpmpp_2m_update, l_prev, l_from, l_to)))
        elif not finite[i + 1]:  # heun, the step to the data
            out.append((l_from, partial(_to_data, l_from, l_to)))
        else:  # heun: 2 evaluations a step
            out.append((l_from, partial(_heun_predict, l_from, l_to)))
            out.append((l_to, partial(_heun_correct, l_from, l_to)))
    return out


def nfe(method: str, steps: int, to_the_data: bool) -> int:
    """Network evaluations of `method` over `steps` steps (per video, without CFG's doubling):
    `steps`, but Heun's 2 a step, less 1 when the grid ends at the data (the last step is Euler)."""
    grid = torch.zeros(steps + 1, dtype=torch.float64)
    return len(_stages(method, to_data(grid) if to_the_data else grid, grid))


@torch.no_grad()
def sample(
    method: str,
    denoiser: Denoiser,
    z: Tensor,
    grid: Tensor,
    noise_sampler: NoiseSampler = torch.randn_like,
    progress: bool = False,
) -> Tensor:
    """`method` from `z` at grid[0] to grid[-1]; `noise_sampler(z)` draws each ancestral step's
    noise (per sample with a StackedRandomGenerator; the deterministic methods draw none)."""
    stages, state = _stages(method, grid, z), None
    for logsnr, update in tqdm(stages, disable=not progress, desc=method, leave=False):
        z, state = update(z, denoiser(z, logsnr.expand(z.shape[0])), state, noise_sampler)
    return z


sample_ddpm = partial(sample, "ddpm")  # ancestral; also k-diffusion's Euler-ancestral (eta 1)
sample_ddim = partial(sample, "ddim")
sample_heun = partial(sample, "heun")
sample_dpmpp_2m = partial(sample, "dpmpp-2m")

# "euler-ancestral": k-diffusion's sample_euler_ancestral (eta = 1) steps x = z / alpha to
# sigma_down = sigma_to^2 / sigma_from along (x - D) / sigma and adds sigma_up noise,
# sigma_up^2 = sigma_to^2 (1 - sigma_to^2 / sigma_from^2): the mean D + (sigma_to / sigma_from)^2
# (x - D) and variance of DDPM's posterior q(z_to | z_from, D) exactly (tests/test_samplers.py)
SAMPLERS = {
    "ddpm": sample_ddpm,
    "euler-ancestral": sample_ddpm,
    "ddim": sample_ddim,
    "heun": sample_heun,
    "dpmpp-2m": sample_dpmpp_2m,
}
METHODS = tuple(SAMPLERS)


def get_sampler(method: str):
    """The sampler named `method`, one of METHODS."""
    if method not in SAMPLERS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
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
    stages = _stages(method, grid, z)
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
