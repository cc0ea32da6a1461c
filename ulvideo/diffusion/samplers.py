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
stages over the whole z; windows.sample_windows runs the same stages frame by frame. Clipping
predictions (the decoder's) and pinning context latents (pin_context) wrap the denoiser; they are
not sampler options.
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


def sampler_stages(method: str, grid: Tensor, like: Tensor) -> list[tuple[Tensor, Update]]:
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
    return len(sampler_stages(method, to_data(grid) if to_the_data else grid, grid))


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
    stages, state = sampler_stages(method, grid, z), None
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


def pin_context(denoiser: Denoiser, clean: Tensor, keep: Tensor) -> Denoiser:
    """Where `keep` is True the denoiser sees, and predicts, the given `clean` latents: frame
    prediction from context frames."""

    def pinned(z: Tensor, logsnr: Tensor) -> Tensor:
        return torch.where(keep, clean, denoiser(torch.where(keep, clean, z), logsnr))

    return pinned
