"""The samplers: DDPM / Euler-ancestral, DDIM, EDM's Heun and DPM-Solver++(2M) on grids
uniform in t, in log-SNR and EDM's rho = 7, measured on Gaussian data with its exact denoiser, checked
against k-diffusion's formulas written independently in the variance-exploding form, and windowed."""

import json
import math

import pytest
import torch

from ulvideo import UnifiedLatents
from ulvideo.diffusion import (
    GRIDS,
    METHODS,
    LinearLogSNR,
    ShiftedCosine,
    StackedRandomGenerator,
    alpha_sigma,
    get_sampler,
    logsnr_grid,
    nfe,
    randn_frames,
    randn_like,
    sample,
    to_data,
)
from ulvideo.models import autoencoder_preset
from ulvideo.sample import SamplingConfig

F64 = torch.float64
MEAN, STD = 0.6, 0.4  # the data: N(MEAN, STD^2)
DECODER = ShiftedCosine.for_resolution(32)  # the demo decoder's schedule (32 px), ends at the data
BASE = LinearLogSNR()  # the latent schedule, ends at lambda = 5
ORDER = {"ddpm": 1, "euler-ancestral": 1, "ddim": 1, "heun": 2, "dpmpp-2m": 2}


def exact_denoiser(z, logsnr):
    # E[x | z_lambda] for x ~ N(m, s^2): m + a s^2 (z - a m) / (a^2 s^2 + sigma^2)
    a, s = alpha_sigma(logsnr.view(-1, *[1] * (z.ndim - 1)))
    return MEAN + a * STD**2 * (z - a * MEAN) / (a**2 * STD**2 + s**2)


def marginal(logsnr: float) -> tuple[float, float]:
    # (mean, std) of z_lambda = a x + sigma eps; lambda = inf is the data
    a, s = (float(v) for v in alpha_sigma(torch.tensor(logsnr, dtype=F64)))
    return a * MEAN, math.hypot(a * STD, s)


def output_moments(method: str, grid: torch.Tensor) -> tuple[float, float]:
    """The exact (mean, std) of the sampler's output started from the exact marginal at grid[0].

    With the exact denoiser every update is affine in z and in the noise, so the output is
    c + A z_start + sum_j B_j eps_j: row 0 runs from the start's mean without noise (c + A mean),
    row 1 from mean + std (adds A std), row 2 + j with a unit noise at draw j only (adds B_j).
    """
    start_mean, start_std = marginal(float(grid[0]))
    rows = 2 + len(grid) * 2  # more than the draws of any method
    z = torch.full((rows, 1), start_mean, dtype=F64)
    z[1] += start_std
    draws = []

    def unit_noise(like):
        eps = torch.zeros_like(like)
        eps[2 + len(draws)] = 1
        draws.append(1)
        return eps

    out = sample(method, exact_denoiser, z, grid, unit_noise)[:, 0]
    return float(out[0]), float((out[1:] - out[0]).square().sum().sqrt())


def w2_error(method: str, schedule, steps: int, grid: str) -> float:
    """The 2-Wasserstein distance between the sampler's output and the exact distribution at the
    grid's end (the data for the decoder, the marginal at lambda = 5 for the base model)."""
    log_snrs = logsnr_grid(schedule, steps, grid)
    if schedule is DECODER:
        log_snrs = to_data(log_snrs)
    mean, std = output_moments(method, log_snrs)
    target = marginal(float(log_snrs[-1]))
    return math.hypot(mean - target[0], std - target[1])


def test_output_moments_match_a_monte_carlo_run():
    # the linearity trick against plain sampling: 40000 draws, DDPM (which draws noise) at 8 steps
    grid = to_data(logsnr_grid(DECODER, 8))
    mean, std = output_moments("ddpm", grid)
    g = torch.Generator().manual_seed(0)
    noise = lambda z: torch.randn(z.shape, generator=g, dtype=F64)  # noqa: E731
    start = marginal(float(grid[0]))
    x = sample(
        "ddpm", exact_denoiser, start[0] + start[1] * noise(torch.empty(40000, 1)), grid, noise
    )
    se = std / 200  # std / sqrt(40000)
    assert abs(float(x.mean()) - mean) < 4 * se and abs(float(x.std()) - std) < 4 * se * 0.71
    assert abs(std - STD) > 0.02  # 8 ancestral steps are measurably off: the check has power


@pytest.mark.parametrize("method", METHODS)
def test_every_sampler_converges_to_the_data_and_stops_at_the_grids_end(method):
    # to the data (decoder) and to the exact marginal at lambda = 5 (base model), on every grid:
    # a sampler that stopped elsewhere (at x_hat, or one step early) would plateau
    for schedule in (DECODER, BASE):
        for grid in GRIDS:
            coarse, fine = (w2_error(method, schedule, n, grid) for n in (8, 128))
            assert fine < coarse / 4 and fine < 0.04, (schedule, grid, coarse, fine)
            if ORDER[method] == 2:
                assert fine < 2e-3, (schedule, grid, fine)


@pytest.mark.parametrize("method", METHODS)
def test_convergence_order(method):
    """E(N) = C N^-p (1 + O(1/N)), so E(64) / E(128) = 2^p (1 + O(1/N)). Measured on the log-SNR
    grid (decoder) and the base model's grid: 1.91-1.98 for the first-order methods, 3.80-4.13 for
    Heun and DPM-Solver++(2M). The bounds [1.6, 2.4] and [3, 5.5] leave room for the O(1/N) term
    (and W2 mixing two error components of different signs) and exclude the neighbouring orders:
    a second-order method without its correction is first-order (ratio 2) and fails. Heun on the
    t grid of the decoder's cosine is left out: its first step, from sigma = e^8.2, has a local
    error O(N^-3) that dominates up to N ~ 1000 (ratio ~8, third-order-looking, not a bug)."""
    low, high = (1.6, 2.4) if ORDER[method] == 1 else (3.0, 5.5)
    for schedule, grid in ((DECODER, "logsnr"), (DECODER, "karras"), (BASE, "t")):
        ratio = w2_error(method, schedule, 64, grid) / w2_error(method, schedule, 128, grid)
        assert low <= ratio <= high, (method, schedule, grid, ratio)


def test_grids_end_exactly_and_karras_is_edms():
    for schedule in (DECODER, BASE):
        low, high = schedule.logsnr_min, schedule.logsnr_max
        for grid in GRIDS:
            g = logsnr_grid(schedule, 7, grid)
            assert len(g) == 8 and g[0] == low and g[-1] == high and (g.diff() > 0).all()
        torch.testing.assert_close(
            logsnr_grid(schedule, 4, "logsnr").diff(), ((high - low) / 4) * torch.ones(4, dtype=F64)
        )
        # EDM eq. 5 in sigma = exp(-lambda / 2), from sigma_max down to sigma_min, rho = 7
        s_max, s_min = math.exp(-low / 2), math.exp(-high / 2)
        i = torch.arange(6, dtype=F64)
        sigmas = (s_max ** (1 / 7) + i / 5 * (s_min ** (1 / 7) - s_max ** (1 / 7))) ** 7
        torch.testing.assert_close(logsnr_grid(schedule, 5, "karras"), -2 * sigmas.log())
    torch.testing.assert_close(
        logsnr_grid(DECODER, 6, "t"), DECODER(torch.linspace(1, 0, 7, dtype=F64))
    )
    assert BASE(torch.zeros(1)) == 5  # the base grid ends at the noisy z0


# ---------------------------------------------------------------- k-diffusion, written in VE form


def nonlinear_denoiser(z, logsnr):  # a smooth stand-in for a network
    return torch.tanh(1.5 * z + 0.3 * torch.sin(3 * z)) * torch.sigmoid(logsnr / 3).view(-1, 1)


def ve_denoiser(x, sigma):  # D(x; sigma) of the VE form x = z / alpha, lambda = -2 log sigma
    logsnr = -2 * torch.log(sigma)
    return nonlinear_denoiser(alpha_sigma(logsnr)[0] * x, logsnr.expand(len(x)))


def ve_run(step, grid, z):  # z at grid[0] -> x at sigma_0 ... -> z at grid[-1]
    sigmas = torch.exp(-grid / 2)
    x = z / alpha_sigma(grid[0])[0]
    x = step(x, sigmas)
    return alpha_sigma(grid[-1])[0] * x


def kdiffusion_heun(x, sigmas):  # k-diffusion sample_heun = EDM Alg. 1 without churn
    for i in range(len(sigmas) - 1):
        denoised = ve_denoiser(x, sigmas[i])
        d = (x - denoised) / sigmas[i]
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = (x_2 - ve_denoiser(x_2, sigmas[i + 1])) / sigmas[i + 1]
            x = x + (d + d_2) / 2 * dt
    return x


def kdiffusion_dpmpp_2m(x, sigmas):  # k-diffusion sample_dpmpp_2m, t = -log(sigma)
    old = None
    for i in range(len(sigmas) - 1):
        denoised = ve_denoiser(x, sigmas[i])
        t, t_next = -sigmas[i].log(), -sigmas[i + 1].log()
        h = t_next - t
        if old is None or sigmas[i + 1] == 0:
            x = (sigmas[i + 1] / sigmas[i]) * x - torch.expm1(-h) * denoised
        else:
            r = (t - -sigmas[i - 1].log()) / h
            d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old
            x = (sigmas[i + 1] / sigmas[i]) * x - torch.expm1(-h) * d
        old = denoised
    return x


def kdiffusion_euler_ancestral(noise):
    def run(x, sigmas):  # k-diffusion sample_euler_ancestral, eta = 1
        for i in range(len(sigmas) - 1):
            denoised = ve_denoiser(x, sigmas[i])
            up = torch.sqrt(
                sigmas[i + 1] ** 2 * (sigmas[i] ** 2 - sigmas[i + 1] ** 2) / sigmas[i] ** 2
            )
            down = torch.sqrt(sigmas[i + 1] ** 2 - up**2)
            x = x + (x - denoised) / sigmas[i] * (down - sigmas[i])
            if sigmas[i + 1] > 0:
                # our noise is drawn for z = alpha x: the VE noise is the same draw
                x = x + noise[i] * up
        return x

    return run


@pytest.mark.parametrize("end", ["data", "z0"])
def test_samplers_match_k_diffusion_in_the_variance_exploding_form(end):
    grid = logsnr_grid(LinearLogSNR(5, -10), 9, "karras")
    if end == "data":
        grid = to_data(grid)
    z = torch.randn(64, 1, generator=torch.Generator().manual_seed(0), dtype=F64) * 3
    noise = torch.randn(len(grid), 64, 1, generator=torch.Generator().manual_seed(1), dtype=F64)
    for method, reference in (
        ("heun", kdiffusion_heun),
        ("dpmpp-2m", kdiffusion_dpmpp_2m),
        ("euler-ancestral", kdiffusion_euler_ancestral(noise)),
    ):
        draws = iter(noise)
        ours = sample(method, nonlinear_denoiser, z, grid, lambda like, d=draws: next(d))
        torch.testing.assert_close(ours, ve_run(reference, grid, z), rtol=1e-9, atol=1e-10)


def test_the_multistep_history_belongs_to_one_call_and_one_video():
    grid = to_data(logsnr_grid(DECODER, 6))
    a, b = torch.randn(2, 3, 1, generator=torch.Generator().manual_seed(0), dtype=F64)
    for method in ("dpmpp-2m", "heun"):
        run = lambda z, m=method: sample(m, nonlinear_denoiser, z, grid)  # noqa: E731
        first = run(a)
        run(b)  # another video in between
        torch.testing.assert_close(run(a), first, rtol=0, atol=0)
        # a batch is its videos sampled apart
        torch.testing.assert_close(
            run(torch.cat([a, b])), torch.cat([first, run(b)]), rtol=0, atol=0
        )


def test_network_evaluations_are_counted_as_the_samplers_make_them():
    for method in METHODS:
        for steps in (1, 5):
            for grid in (logsnr_grid(BASE, steps), to_data(logsnr_grid(DECODER, steps))):
                calls = []

                def counting(z, logsnr, calls=calls):
                    calls.append(1)
                    return exact_denoiser(z, logsnr)

                sample(method, counting, torch.zeros(2, 1, dtype=F64), grid)
                assert len(calls) == nfe(method, steps, to_the_data=grid[-1].isinf().item())
    assert (
        nfe("heun", 16, True) == 31
        and nfe("heun", 16, False) == 32
        and nfe("dpmpp-2m", 16, True) == 16
    )


def test_unknown_names_raise_clear_errors():
    with pytest.raises(
        ValueError,
        match=r"method must be one of \['ddpm', 'euler-ancestral', 'ddim', 'heun', 'dpmpp-2m'\], got 'euler'",
    ):
        get_sampler("euler")
    with pytest.raises(
        ValueError, match=r"grid must be one of \['t', 'logsnr', 'karras'\], got 'cosine'"
    ):
        logsnr_grid(BASE, 4, "cosine")
    with pytest.raises(ValueError, match="method must be one of"):
        SamplingConfig(method="dpm++")
    with pytest.raises(ValueError, match="grid must be one of"):
        SamplingConfig(grid="edm")


# ---------------------------------------------------------------- windowed decode


@pytest.fixture(scope="module")
def tiny_ul():
    torch.manual_seed(0)
    return UnifiedLatents(autoencoder_preset("tiny")).eval()


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_a_windowed_decode_with_one_window_is_the_plain_sampler(tiny_ul, method):
    # reference: the sampler over the decoder itself, the per-video noise drawn frame by frame
    z0 = torch.randn(
        1, tiny_ul.config.latent_channels, 3, 2, 4, generator=torch.Generator().manual_seed(3)
    )
    rng = StackedRandomGenerator("cpu", 0, [0])

    def noise(z):
        return randn_frames(torch.empty_like(z), lambda frame: randn_like(frame, rng))

    reference = sample(
        method,
        lambda x_t, logsnr: tiny_ul.decoder(x_t, z0, logsnr).clamp(-1, 1),
        noise(z0.new_empty(1, 3, 9, 16, 32)),
        to_data(logsnr_grid(tiny_ul.pixel_schedule, 3, "karras")),
        noise_sampler=noise,
    ).clamp(-1, 1)
    for options in ({}, {"window": 9}, {"window": 9, "tile": 32}):
        video = tiny_ul.decode(
            z0, 3, method, StackedRandomGenerator("cpu", 0, [0]), grid="karras", **options
        )
        assert torch.equal(video, reference), options


def overshoot(x_t):
    return 2 * torch.sin(3 * x_t)  # out of [-1, 1] often, and not monotone: clipping moves the path


class OvershootingDecoder(torch.nn.Module):
    def forward(self, x_t, z0, logsnr):
        return overshoot(x_t)


def test_decode_clips_every_prediction_not_only_the_output():
    # the reference: DDIM over the stand-in clipped at every step, from decode's start noise
    # (drawn per video, frame by frame: randn_frames); clipping only the output lands elsewhere
    ul = UnifiedLatents(autoencoder_preset("tiny")).eval()
    ul.decoder = OvershootingDecoder()  # a local model: plain assignment, nothing to undo
    z0 = torch.zeros(1, ul.config.latent_channels, 2, 1, 1)  # 5 x 8 x 8 pixels
    video = ul.decode(z0, 3, "ddim", StackedRandomGenerator("cpu", 0, [0]))
    rng = StackedRandomGenerator("cpu", 0, [0])
    start = randn_frames(torch.empty(1, 3, 5, 8, 8), lambda frame: randn_like(frame, rng))
    grid = to_data(logsnr_grid(ul.pixel_schedule, 3))

    def ddim(clip):
        def denoiser(x_t, logsnr):
            return overshoot(x_t).clamp(-1, 1) if clip else overshoot(x_t)

        return sample("ddim", denoiser, start.clone(), grid).clamp(-1, 1)

    torch.testing.assert_close(video, ddim(clip=True), rtol=0, atol=1e-6)
    assert (video - ddim(clip=False)).abs().mean() > 0.5  # measured: 0.97


@pytest.mark.slow
def test_generate_and_reconstruct_use_the_configured_sampler_and_grid():
    from ulvideo.models import base_preset, build_base
    from ulvideo.pipeline import Pipeline

    torch.manual_seed(0)
    ul = UnifiedLatents(autoencoder_preset("tiny", resolution=16)).eval()
    base_config = base_preset("tiny")
    pipeline = Pipeline(ul, build_base(base_config).eval(), base_config)

    def generate(**options):
        return pipeline.generate(1, 5, 16, SamplingConfig(base_steps=2, decoder_steps=2, **options))

    ddpm = generate()
    for options in ({"grid": "karras"}, {"method": "heun"}, {"method": "dpmpp-2m"}):
        assert (generate(**options) - ddpm).abs().mean() > 1e-3, options
    video = ddpm.clamp(-1, 1)
    plain = pipeline.reconstruct(video, 2)
    for options in ({"grid": "logsnr"}, {"method": "heun"}):
        assert (pipeline.reconstruct(video, 2, **options) - plain).abs().mean() > 1e-3, options


# ---------------------------------------------------------------- cost accounting


@pytest.mark.slow
def test_sampling_flops_are_what_the_samplers_run_and_info_prices_a_k600_fvd(tmp_path, capsys):
    from torch.utils.flop_counter import FlopCounterMode

    from ulvideo.cli import main
    from ulvideo.models import base_preset, build_base, sampling_flops_per_video
    from ulvideo.pipeline import Pipeline

    torch.manual_seed(0)
    config, base_config = (
        autoencoder_preset("tiny", resolution=16),
        base_preset("tiny", num_classes=3),
    )
    pipeline = Pipeline(UnifiedLatents(config).eval(), build_base(base_config).eval(), base_config)
    pipeline.set_attention_backend("naive")  # explicit matmuls: CPU sdpa kernels count 0 FLOPs
    for method, cfg_scale in (("heun", 2.0), ("dpmpp-2m", 1.0)):
        sampling = SamplingConfig(base_steps=3, decoder_steps=2, method=method, cfg_scale=cfg_scale)
        with FlopCounterMode(display=False) as counter:  # every matmul, conv and attention run
            pipeline.generate(1, 5, 32, sampling, labels=torch.tensor([1]))
        count = sampling_flops_per_video(config, 5, 32, 32, 3, 2, method, cfg_scale, base_config)
        assert count["flops"] == counter.get_total_flops(), method
        # heun: 2 x 3 base passes, doubled by CFG; 2 x 2 - 1 decoder passes (the last is Euler)
        assert (count["base_nfe"], count["decoder_nfe"]) == (
            (12, 3) if method == "heun" else (3, 2)
        )
    # the K600 FVD: 4 groups x 50,000 videos at 40% of an H100's 989 bf16 TFLOP/s
    pipeline.save_pretrained(tmp_path)
    flags = ["--frames", "5", "--resolution", "32", "--base_steps", "3", "--decoder_steps", "2"]
    assert main(["info", str(tmp_path), *flags, "--method", "heun", "--cfg_scale", "2"]) == 0
    info = json.loads(capsys.readouterr().out)
    per_video = sampling_flops_per_video(config, 5, 32, 32, 3, 2, "heun", 2.0, base_config)["flops"]
    assert info["sampling_flops_per_video"]["flops"] == per_video
    cost = info["k600_fvd_cost"]
    assert cost["videos"] == 200_000 and cost["flops"] == 200_000 * per_video
    assert math.isclose(
        cost["gpu_hours"], 200_000 * per_video / (0.4 * 989e12) / 3600, rel_tol=1e-12
    )
    assert main(["info", str(tmp_path), "--mfu", "1.5"]) == 2  # a clear error, not a number
    assert "mfu" in capsys.readouterr().err
