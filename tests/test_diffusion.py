"""UL objective: schedules, closed-form bitrate, decoder weighting, gradients, bad arguments."""

import math

import pytest
import torch
from scipy import integrate

from ulvideo.diffusion import (
    LinearLogSNR,
    ShiftedCosine,
    alpha_sigma,
    base_loss,
    bits_per_pixel,
    context_mask,
    ddim_step,
    ddpm_step,
    decoder_terms,
    diffuse,
    expand_to,
    get_sampler,
    logsnr_grid,
    pin_context,
    prior_elbo,
    sample_ddpm,
    stratified_t,
    to_data,
    v_to_x,
    x_to_eps,
)
from ulvideo.diffusion.schedules import Schedule

SCHEDULES = [
    LinearLogSNR(),
    LinearLogSNR(5.0, -10.0),
    ShiftedCosine.for_resolution(32),
    ShiftedCosine.for_resolution(256),
]


def gaussian_denoiser(scale: float):
    """Exact posterior mean E[z | z_t] for z ~ N(0, scale^2 I)."""

    def denoise(z_t, logsnr):
        alpha, sigma = alpha_sigma(expand_to(logsnr, z_t))
        return alpha * scale**2 * z_t / (alpha.square() * scale**2 + sigma.square())

    return denoise


@pytest.mark.parametrize("schedule", SCHEDULES, ids=repr)
def test_schedule_is_monotone_with_exact_derivative(schedule):
    t = torch.linspace(0.001, 0.999, 999, dtype=torch.float64)
    lam = schedule(t)
    assert (lam[1:] < lam[:-1]).all()
    h = 1e-6
    finite_diff = -(schedule(t + h) - schedule(t - h)) / (2 * h)
    torch.testing.assert_close(schedule.neg_dlogsnr_dt(t), finite_diff, rtol=1e-5, atol=1e-6)
    # the inverse maps log-SNR back to t
    torch.testing.assert_close(schedule.inverse(lam), t, rtol=0, atol=1e-7)


def test_schedule_endpoints():
    lat = LinearLogSNR()
    assert lat(torch.tensor(0.0)).item() == 5.0
    assert lat(torch.tensor(1.0)).item() == -15.0
    cos = ShiftedCosine.for_resolution(128, logsnr_max=15, logsnr_min=-15)
    ends = cos(torch.tensor([0.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(ends, torch.tensor([15.0, -15.0], dtype=torch.float64))
    # the shift moves the middle of the schedule by 2 log(64 / 128)
    mid = ShiftedCosine.for_resolution(64, logsnr_max=30, logsnr_min=-30)(
        torch.tensor(0.5, dtype=torch.float64)
    )
    mid_128 = ShiftedCosine.for_resolution(128, logsnr_max=30, logsnr_min=-30)
    t = mid_128.inverse(torch.tensor(0.0, dtype=torch.float64) + 2 * math.log(0.5))
    assert abs(t.item() - 0.5) < 1e-6 and abs(mid.item()) < 1e-9


def test_shifted_cosine_centres_its_draws_on_the_shift():
    # lambda = -2 log tan(u) + shift is densest (-dlambda/dt = 4 (u_max - u_min) / sin 2u least) at
    # u = pi/4, where lambda = shift; shift 2 log 2 is the resolution shift of 32 px against 64
    cos = ShiftedCosine(2.7, logsnr_max=5, logsnr_min=-15)
    t = torch.linspace(0, 1, 100_001, dtype=torch.float64)
    densest = t[cos.neg_dlogsnr_dt(t).argmin()]
    assert abs(cos(densest).item() - 2.7) < 1e-3
    ends = cos(torch.tensor([0.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(ends, torch.tensor([5.0, -15.0], dtype=torch.float64))
    by_resolution = ShiftedCosine.for_resolution(32, 64, logsnr_max=5, logsnr_min=-15)
    torch.testing.assert_close(
        ShiftedCosine(2 * math.log(2), 5, -15)(t), by_resolution(t), rtol=0, atol=1e-12
    )


def test_vp_identities():
    lam = torch.linspace(-20, 20, 101, dtype=torch.float64)
    alpha, sigma = alpha_sigma(lam)
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones_like(lam))
    torch.testing.assert_close(torch.log(alpha**2 / sigma**2), lam)
    x, eps = torch.randn(2, 101, dtype=torch.float64)
    z = alpha * x + sigma * eps
    torch.testing.assert_close(diffuse(x[:, None], lam, eps[:, None])[:, 0], z)
    lam_b = lam
    torch.testing.assert_close(x_to_eps(z, x, lam_b), eps)
    # v = alpha * eps - sigma * x (Salimans & Ho 2022), computed here from its definition
    torch.testing.assert_close(v_to_x(z, alpha * eps - sigma * x, lam_b), x)


def test_stratified_t_covers_every_stratum():
    t = stratified_t(64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.sort((t * 64).floor().long()).values, torch.arange(64))


def _mc_mean(loss_fn, repeats, batch, dim, scale, seed=0):
    g = torch.Generator().manual_seed(seed)
    totals = []
    for _ in range(repeats):
        z = scale * torch.randn(batch, dim, generator=g, dtype=torch.float64)
        t = stratified_t(batch, generator=g).double()
        eps = torch.randn(batch, dim, generator=g, dtype=torch.float64)
        totals.append(loss_fn(z, t, eps))
    return torch.cat(totals).mean().item() / dim


@pytest.mark.parametrize(
    "schedule", [LinearLogSNR(), ShiftedCosine(0.0, logsnr_max=5, logsnr_min=-15)]
)
def test_prior_elbo_equals_gaussian_mutual_information(schedule):
    # E[L_z] for z ~ N(0, I) with the exact denoiser = I(z; z0) = 0.5 log(1 + e^5) nats/dim = 2.5034
    expected = 0.5 * math.log1p(math.exp(5.0))
    assert abs(expected - 2.5034) < 1e-4
    measured = _mc_mean(
        lambda z, t, e: prior_elbo(gaussian_denoiser(1.0), z, schedule, t=t, eps=e),
        repeats=8,
        batch=4096,
        dim=16,
        scale=1.0,
    )
    assert abs(measured - expected) / expected < 0.01, (measured, expected)
    assert abs(measured / math.log(2) - 3.61) < 0.05  # about 3.61 bits


@pytest.mark.parametrize("scale", [0.2, 3.0])
def test_prior_elbo_other_scale_adds_marginal_terminal_kl(scale):
    schedule = LinearLogSNR(5.0, -1.0)  # a short schedule makes the terminal mismatch sizeable
    a1sq = 1 / (1 + math.exp(1.0))
    s1sq = 1 - a1sq
    v = a1sq * scale**2 + s1sq
    expected = 0.5 * math.log1p(scale**2 * math.exp(5.0)) + 0.5 * (v - 1 - math.log(v))
    measured = _mc_mean(
        lambda z, t, e: prior_elbo(gaussian_denoiser(scale), z, schedule, t=t, eps=e),
        repeats=8,
        batch=4096,
        dim=16,
        scale=scale,
    )
    assert abs(measured - expected) / expected < 0.01, (measured, expected)
    # the marginal KL term is a real contribution here, larger than the tolerance
    assert 0.5 * (v - 1 - math.log(v)) > 0.015 * expected


def test_prior_elbo_detects_a_wrong_denoiser():
    # a denoiser that ignores its input costs more bits than the exact one
    schedule = LinearLogSNR()
    exact = _mc_mean(
        lambda z, t, e: prior_elbo(gaussian_denoiser(1.0), z, schedule, t=t, eps=e), 2, 2048, 8, 1.0
    )
    zero = _mc_mean(
        lambda z, t, e: prior_elbo(lambda zt, l: torch.zeros_like(zt), z, schedule, t=t, eps=e),
        2,
        2048,
        8,
        1.0,
    )
    assert zero > exact * 1.5


def sigmoid_weighted_gaussian_loss(scale: float, bias: float, lo: float, hi: float) -> float:
    """Closed form per dim of the sigmoid-weighted loss of N(0, scale^2) data with the exact
    denoiser over lambda in [lo, hi]: the integral of 0.5 sigmoid(b - lam) s^2 e^lam / (s^2 e^lam + 1)."""

    def integrand(lam):
        s2 = scale**2 * math.exp(lam)
        return 0.5 / (1 + math.exp(lam - bias)) * s2 / (s2 + 1)

    return integrate.quad(integrand, lo, hi)[0]


def test_decoder_weighting_down_weights_low_noise():
    lam = torch.tensor([-10.0, 0.0, 10.0])
    from ulvideo.diffusion import sigmoid_weight

    w = sigmoid_weight(0.0)(lam)
    assert w[0] > 0.99 and abs(w[1] - 0.5) < 1e-6 and w[2] < 1e-4
    assert sigmoid_weight(2.0)(torch.tensor(2.0)) == 0.5


def test_decoder_loss_linear_in_loss_factor_and_matches_quadrature():
    scale, bias, dim = 0.5, 1.0, 8
    schedule = ShiftedCosine(0.0, logsnr_max=10, logsnr_min=-10)

    def denoiser(x_t, z0, logsnr):
        return gaussian_denoiser(scale)(x_t, logsnr)

    g = torch.Generator().manual_seed(1)
    x = scale * torch.randn(8192, dim, generator=g, dtype=torch.float64)
    z0 = torch.zeros(8192, 1, dtype=torch.float64)
    t = stratified_t(8192, generator=g).double()
    eps = torch.randn(x.shape, generator=g, dtype=torch.float64)
    l1 = decoder_terms(denoiser, x, z0, schedule, loss_factor=1.0, bias=bias, t=t, eps=eps)[0]
    l17 = decoder_terms(denoiser, x, z0, schedule, loss_factor=1.7, bias=bias, t=t, eps=eps)[0]
    torch.testing.assert_close(l17, 1.7 * l1)

    expected = sigmoid_weighted_gaussian_loss(scale, bias, -10, 10)
    measured = _mc_mean(
        lambda xx, tt, ee: decoder_terms(
            denoiser, xx, z0, schedule, bias=bias, loss_factor=1.0, t=tt, eps=ee
        )[0],
        repeats=8,
        batch=8192,
        dim=dim,
        scale=scale,
        seed=2,
    )
    assert abs(measured - expected) / expected < 0.01, (measured, expected)


def test_gradients_reach_encoder_through_zt_and_target():
    # d L / d w = (path through the target z_clean) + (path through z_t); both must be non-zero
    schedule = LinearLogSNR()
    torch.manual_seed(0)
    z_source, t, eps = torch.randn(4, 6), torch.rand(4), torch.randn(4, 6)

    def grad_of(loss_fn):
        w = torch.ones(6, requires_grad=True)  # a one-parameter-per-dim "encoder"
        loss_fn(z_source * w).sum().backward()
        return w.grad

    full = grad_of(lambda z: prior_elbo(lambda zt, l: 0.5 * zt, z, schedule, t=t, eps=eps))
    target_only = grad_of(
        lambda z: prior_elbo(lambda zt, l: 0.5 * zt.detach(), z, schedule, t=t, eps=eps)
    )

    def zt_only(z):  # the same weighted MSE, by hand, with the target detached
        lam = schedule(t)
        weight = schedule.neg_dlogsnr_dt(t) * torch.exp(lam) / 2
        return weight * (z.detach() - 0.5 * diffuse(z, lam, eps)).square().sum(1)

    through_zt = grad_of(zt_only)
    assert target_only.abs().min() > 1e-3 and through_zt.abs().min() > 1e-3
    torch.testing.assert_close(full, target_only + through_zt)


def test_base_loss_schedule_changes_only_the_variance():
    # latents of std 0.25 with the exact denoiser: E[base loss] per dim is the quadrature of
    # 0.5 sigmoid(b - lam) s^2 e^lam / (s^2 e^lam + 1) over [-15, 5] under either schedule; the
    # cosine centred at 2 ln(1/s) spends its draws where the integrand is, and has a smaller spread
    scale, bias, dim, batch = 0.25, 2.77, 16, 8192
    centre = 2 * math.log(1 / scale)

    expected = sigmoid_weighted_gaussian_loss(scale, bias, -15, 5)
    spreads = []
    for schedule in (LinearLogSNR(), ShiftedCosine(centre, 5, -15)):

        def loss(z, t, e, schedule=schedule):
            return base_loss(gaussian_denoiser(scale), z, schedule, bias=bias, t=t, eps=e)

        measured = _mc_mean(loss, repeats=8, batch=batch, dim=dim, scale=scale, seed=3)
        assert abs(measured - expected) / expected < 0.01, (schedule, measured, expected)
        g = torch.Generator().manual_seed(4)
        z = scale * torch.randn(batch, dim, generator=g, dtype=torch.float64)
        t = torch.rand(batch, generator=g, dtype=torch.float64)
        spreads.append(loss(z, t, torch.randn(z.shape, generator=g, dtype=torch.float64)).std())
    assert spreads[1] < 0.5 * spreads[0], spreads


def test_base_loss_ignores_context_frames():
    schedule = LinearLogSNR()
    z = torch.randn(2, 3, 4, 2, 2)
    t, eps = torch.rand(2), torch.randn_like(z)
    seen = {}

    def denoiser(zt, logsnr):
        seen["zt"] = zt
        out = torch.zeros_like(zt)
        out[:, :, :2] = 100.0  # wrong only on the context frames
        return out

    with_ctx = base_loss(denoiser, z, schedule, context_frames=2, t=t, eps=eps)
    torch.testing.assert_close(seen["zt"][:, :, :2], z[:, :, :2])  # context is given clean
    ref = base_loss(
        lambda zt, l: torch.zeros_like(zt), z[:, :, 2:], schedule, t=t, eps=eps[:, :, 2:]
    )
    torch.testing.assert_close(with_ctx, ref)
    with pytest.raises(ValueError, match="context_frames"):
        base_loss(denoiser, z, schedule, context_frames=4, t=t, eps=eps)


def test_bits_per_pixel_units():
    nats = torch.tensor([math.log(2) * 17 * 32 * 32])
    assert bits_per_pixel(nats, 17, 32, 32).item() == pytest.approx(1.0)


def test_bad_arguments_raise_clear_errors():
    schedule = LinearLogSNR()
    ok = lambda zt, l: zt  # noqa: E731
    with pytest.raises(ValueError, match="must be batched"):
        prior_elbo(ok, torch.zeros(4), schedule)
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        decoder_terms(lambda x, z, l: x, [[0.0]], torch.zeros(2, 1), schedule)
    with pytest.raises(ValueError, match="strictly decreasing"):
        LinearLogSNR(logsnr_max=-15, logsnr_min=5)
    with pytest.raises(ValueError, match="strictly decreasing"):
        ShiftedCosine(0.0, logsnr_max=-5, logsnr_min=5)

    class Increasing(Schedule):
        logsnr_max, logsnr_min = 5.0, -15.0

        def logsnr(self, t):
            return t

        def neg_dlogsnr_dt(self, t):
            return -torch.ones_like(t)

    with pytest.raises(ValueError, match="strictly decreasing"):
        Increasing().validate()
    with pytest.raises(ValueError, match="batched"):
        prior_elbo(ok, torch.randn(5), schedule)
    with pytest.raises(ValueError, match="denoiser returned shape"):
        prior_elbo(lambda zt, l: zt[:, :2], torch.randn(2, 4), schedule)
    with pytest.raises(ValueError, match="batch sizes"):
        decoder_terms(lambda x, z, l: x, torch.randn(2, 3), torch.randn(3, 1), schedule)


@pytest.mark.slow
def test_sampler_recovers_gaussian_statistics():
    # with the exact denoiser, sampling N(0, s^2) reproduces the variance as the steps grow
    scale = 0.5
    schedule = ShiftedCosine(0.0, logsnr_max=12, logsnr_min=-12)
    noise = torch.randn(20000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def seeded(seed):
        g = torch.Generator().manual_seed(seed)
        return lambda z: torch.randn(z.shape, generator=g, dtype=z.dtype)

    def run(method, steps, z=noise, seed=1):  # to the data: the last step returns x_hat
        grid = to_data(logsnr_grid(schedule, steps))
        return get_sampler(method)(gaussian_denoiser(scale), z, grid, noise_sampler=seeded(seed))

    assert abs(run("ddpm", 256).std() - scale) < 0.01
    assert abs(run("ddpm", 256).std() - scale) < abs(run("ddpm", 16).std() - scale) / 4
    assert abs(run("ddim", 256).std() - scale) < 0.005

    # DDIM is deterministic: two noise seeds, one starting noise, identical samples; DDPM
    # draws fresh noise at every step, so there the seeds give different samples
    torch.testing.assert_close(run("ddim", 16, noise[:500], 1), run("ddim", 16, noise[:500], 2))
    assert (run("ddpm", 16, noise[:500], 1) - run("ddpm", 16, noise[:500], 2)).abs().mean() > 0.01
    # stopping at lambda = 5 is the end of the grid: the noisy state z0, variance a^2 s^2 + s_0^2
    z0 = sample_ddpm(
        gaussian_denoiser(scale), noise, logsnr_grid(LinearLogSNR(), 256), noise_sampler=seeded(2)
    )
    a2 = 1 / (1 + math.exp(-5))
    assert abs(z0.var().item() - (a2 * scale**2 + 1 - a2)) < 0.01


def test_a_step_to_infinite_logsnr_returns_the_prediction():
    z, x_hat, noise = torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4)
    l_from, inf = torch.tensor(2.0), torch.tensor(float("inf"))
    torch.testing.assert_close(ddpm_step(z, x_hat, l_from, inf, noise), x_hat, rtol=0, atol=0)
    torch.testing.assert_close(ddim_step(z, x_hat, l_from, inf), x_hat, rtol=0, atol=0)
    grid = to_data(logsnr_grid(LinearLogSNR(), 4))
    assert len(grid) == 5 and grid[-1] == float("inf") and grid[-2] < 5


def test_context_pinning_wraps_the_denoiser():
    seen = []

    def denoiser(z, logsnr):
        seen.append(z.clone())
        return 3 * z

    z, logsnr = torch.linspace(-1, 1, 8).view(1, 1, 2, 2, 2), torch.zeros(1)
    keep = context_mask(z, 1)  # the first latent frame is given
    clean = torch.full_like(z, 0.25)
    out = pin_context(denoiser, clean, keep)(z, logsnr)
    assert torch.equal(seen[-1][:, :, :1], clean[:, :, :1])  # the denoiser sees the given frame
    assert torch.equal(seen[-1][:, :, 1:], z[:, :, 1:])
    assert torch.equal(out[:, :, :1], clean[:, :, :1]) and torch.equal(
        out[:, :, 1:], 3 * z[:, :, 1:]
    )
