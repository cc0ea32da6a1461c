"""PSNR/SSIM against closed forms and scikit-image; ulvideo's reconstruction evaluation on a
stand-in autoencoder."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from test_eval_fvd import pooled_features
from torch import nn

from ulvideo.evaluate.psnr_ssim import psnr, ssim
from ulvideo.evaluate.reconstruction import evaluate_reconstruction
from ulvideo.ul import UnifiedLatents


def astronaut_clips(count: int, frames: int = 16, size: int = 32) -> torch.Tensor:
    """`count x 3 x frames x size x size` real-photo clips in [-1, 1], panning over astronaut."""
    image = torch.from_numpy(data.astronaut()).permute(2, 0, 1).double() / 127.5 - 1
    clips = [
        torch.stack(
            [
                image[:, 60 + 40 * n : 60 + 40 * n + size, 100 + 3 * t : 100 + 3 * t + size]
                for t in range(frames)
            ],
            1,
        )
        for n in range(count)
    ]
    return torch.stack(clips).float()


def test_psnr_of_a_known_error_is_the_closed_form():
    x = torch.zeros(2, 3, 4, 8, 8, dtype=torch.float64)
    offsets = torch.tensor([0.1, 0.2, 0.05, 0.5], dtype=torch.float64).view(1, 1, 4, 1, 1)
    y = x + offsets
    expected = [10 * math.log10(4 / d**2) for d in (0.1, 0.2, 0.05, 0.5)]  # range 2, MSE = d^2
    np.testing.assert_allclose(psnr(x, y).numpy(), [expected, expected], rtol=1e-12)
    assert psnr(x, y, per="video").tolist() == pytest.approx([np.mean(expected)] * 2, rel=1e-12)
    assert math.isinf(psnr(x, x)[0, 0])


def test_psnr_and_ssim_match_scikit_image_per_frame():
    x = astronaut_clips(2, frames=3)
    generator = torch.Generator().manual_seed(0)
    y = (x + 0.1 * torch.randn(x.shape, generator=generator)).clamp(-1, 1)
    ours_psnr, ours_ssim = psnr(x, y), ssim(x, y)
    for b in range(2):
        for t in range(3):
            a, c = x[b, :, t].double().numpy(), y[b, :, t].double().numpy()
            assert ours_psnr[b, t] == pytest.approx(
                peak_signal_noise_ratio(a, c, data_range=2), rel=1e-9
            )
            reference = structural_similarity(
                a,
                c,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                data_range=2,
                channel_axis=0,
            )
            assert ours_ssim[b, t] == pytest.approx(reference, rel=1e-9)
    assert ssim(x, y, per="video").tolist() == pytest.approx(ours_ssim.mean(dim=1).tolist())
    np.testing.assert_allclose(ssim(x, x).numpy(), np.ones((2, 3)), rtol=1e-12)


def test_metric_errors_name_the_problem():
    with pytest.raises(ValueError, match="of one shape"):
        psnr(torch.zeros(1, 3, 2, 16, 16), torch.zeros(1, 3, 2, 16, 8))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.zeros(1, 3, 2, 8, 8), torch.zeros(1, 3, 2, 8, 8))
    with pytest.raises(ValueError, match="'frame' or 'video'"):
        psnr(torch.zeros(1, 3, 2, 8, 8), torch.zeros(1, 3, 2, 8, 8), per="clip")


class PoolingAutoencoder(nn.Module):
    """The UnifiedLatents API on a stand-in: 2x2 average-pool encoder, a known offset as the
    latent noise, nearest-upsampling decoder, and bits/pixel = the batch mean of (video + 1) / 4."""

    OFFSET = 0.05

    def __init__(self, lossless: bool = False):
        super().__init__()
        self.lossless = lossless
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the module a device
        self.decode_steps = []

    def encode(self, video, window=None):  # UnifiedLatents' signatures (windows unused)
        return video if self.lossless else F.avg_pool3d(video, (1, 2, 2))

    def noisy_latent(self, z, rng=None):
        return z if self.lossless else z + self.OFFSET

    def decode(
        self, z0, steps, method="ddpm", rng=None, window=None, tile=None, grid="t", student=None
    ):
        self.decode_steps.append(steps)  # pixels clamped to [-1, 1], as UnifiedLatents.decode
        return (z0 if self.lossless else F.interpolate(z0, scale_factor=(1, 2, 2))).clamp(-1, 1)

    reconstruct_from = UnifiedLatents.reconstruct_from  # the real one, over the methods above

    def rate(self, z, window=None):  # nats per example: ln 2 x pixels x mean((z + 1) / 4)
        pixels = z[0, 0].numel() * (1 if self.lossless else 4)
        return math.log(2) * pixels * ((z + 1) / 4).mean(dim=(1, 2, 3, 4))


@pytest.mark.slow
def test_evaluate_reconstruction_reports_the_metrics_of_the_reconstructions():
    videos = astronaut_clips(6)
    dataset = [(video, label) for label, video in enumerate(videos)]
    model = PoolingAutoencoder()
    report = evaluate_reconstruction(
        model, dataset, num_videos=6, batch_size=2, decode_steps=7, i3d=pooled_features()
    )
    assert model.decode_steps == [7] * 6 and report["num_videos"] == 6  # own + swapped latents
    latent = F.avg_pool3d(videos, (1, 2, 2)) + PoolingAutoencoder.OFFSET
    recon = F.interpolate(latent, scale_factor=(1, 2, 2), mode="nearest").clamp(-1, 1)
    assert report["psnr"] == pytest.approx(float(psnr(recon, videos, per="video").mean()), rel=1e-9)
    swapped = recon.view(3, 2, *recon.shape[1:]).roll(1, dims=1).reshape(recon.shape)
    assert report["psnr_swapped_latent"] == pytest.approx(
        float(psnr(swapped, videos, per="video").mean()), rel=1e-9
    )
    assert report["psnr_swapped_latent"] < report["psnr"] - 3
    assert report["ssim"] == pytest.approx(float(ssim(recon, videos, per="video").mean()), rel=1e-9)
    assert report["psnr_per_frame"] == pytest.approx(
        psnr(recon, videos).mean(dim=0).tolist(), rel=1e-9
    )
    assert len(report["ssim_per_frame"]) == 16
    assert report["bits_per_pixel"] == pytest.approx(float(((videos + 1) / 4).mean()), rel=1e-6)
    assert 15 < report["psnr"] < 40 and 0.2 < report["ssim"] < 1
    assert report["rfvd"] > 0 and report["rfvd_protocol"]["num_frames"] == 16
    assert report["rfvd_protocol"]["name"] == "tfgan"
    via_64 = evaluate_reconstruction(
        model, dataset, 6, 2, 7, i3d=pooled_features(), protocol="magvit-k600"
    )  # the same reconstructions, through MAGVIT's 64 px step
    assert via_64["rfvd_protocol"]["sizes"] == [64, 224] and via_64["psnr"] == report["psnr"]

    perfect = evaluate_reconstruction(
        PoolingAutoencoder(lossless=True), list(videos), 4, i3d=pooled_features()
    )
    assert perfect["rfvd"] == pytest.approx(0, abs=1e-9) and perfect["ssim"] == pytest.approx(1)
    with pytest.raises(ValueError, match="batch of one video"):
        evaluate_reconstruction(model, dataset, num_videos=5, batch_size=2)


class MustNotEncode(PoolingAutoencoder):
    def encode(self, video):
        raise AssertionError("encoded before the inputs were checked")


def test_evaluate_reconstruction_checks_its_inputs_first():
    short = [torch.zeros(3, 8, 32, 32)] * 3
    with pytest.raises(ValueError, match="videos have 8 frames"):
        evaluate_reconstruction(MustNotEncode(), short, num_videos=3, i3d=pooled_features())
    with pytest.raises(ValueError, match="dataset holds 3 videos"):
        evaluate_reconstruction(MustNotEncode(), short, num_videos=4)


@pytest.mark.slow
def test_cli_evaluates_a_stage1_checkpoint_on_a_dataset_smoke(tmp_path, capsys, monkeypatch):
    """A smoke test of the CLI on an untrained checkpoint (report, files, finite numbers); the
    metrics themselves are checked on the stand-in model above."""
    from ulvideo.cli import main as cli_main
    from ulvideo.evaluate.reconstruction import main
    from ulvideo.models import autoencoder_preset
    from ulvideo.pipeline import Pipeline
    from ulvideo.ul import UnifiedLatents

    torch.manual_seed(0)
    Pipeline(UnifiedLatents(autoencoder_preset("tiny"))).save_pretrained(tmp_path / "stage1")
    args = ["--checkpoint", str(tmp_path / "stage1"), "--dataset", "demo", "--num-videos", "2"]
    flags = ["--batch-size", "2", "--decode-steps", "2", "--out", str(tmp_path / "r.json")]
    assert cli_main(["eval", "reconstruction", *args, *flags]) == 0  # `ulvideo eval reconstruction`
    report = json.loads((tmp_path / "r.json").read_text())
    assert json.loads(capsys.readouterr().out) == report
    assert report["num_videos"] == 2 and report["decode_steps"] == 2
    assert len(report["psnr_per_frame"]) == 17  # the demo's 17-frame clips, frame by frame
    assert (
        math.isfinite(report["psnr"]) and -1 <= report["ssim"] <= 1 and report["bits_per_pixel"] > 0
    )
    monkeypatch.setattr(
        "ulvideo.evaluate.reconstruction.load_i3d", lambda weights: pooled_features()
    )
    scored = main([*args, "--decode-steps", "2", "--rfvd", "--protocol", "stylegan-v"])
    assert scored["rfvd_protocol"]["name"] == "stylegan-v" and scored["rfvd"] > 0


@pytest.mark.slow
def test_reconstruction_is_the_models_own_and_keeps_each_videos_noise_across_batches():
    # a real (untrained) tiny model, whose decode depends on every noise draw
    from ulvideo import UnifiedLatents
    from ulvideo.diffusion import StackedRandomGenerator
    from ulvideo.evaluate.reconstruction import reconstruction_metrics
    from ulvideo.models import autoencoder_preset

    torch.manual_seed(0)
    model = UnifiedLatents(autoencoder_preset("tiny")).eval()
    videos = torch.rand(4, 3, 5, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    # one path with UnifiedLatents.reconstruct: the latent noise, then the decoder's, continuing
    # one generator per video (restarting it, the decoder's first draws repeat the latent's)
    metrics = reconstruction_metrics(model, videos[2:], 2, seed=3, first_index=2, bits_draws=1)
    with torch.no_grad():
        own = model.reconstruct(videos[2:], 2, rng=StackedRandomGenerator("cpu", 3, [2, 3]))
    torch.testing.assert_close(metrics["recon"], own.clamp(-1, 1), rtol=0, atol=1e-6)
    # video k's noise comes from (seed, k) whatever the batch: 2 batches of 2 score as 1 of 4
    # (first_index = videos already seen; from 0 in every batch, videos 2, 3 would take 0, 1's)
    halves, whole = (evaluate_reconstruction(model, videos, 4, b, 2, seed=3) for b in (2, 4))
    for key in ("psnr", "ssim", "psnr_per_frame"):
        assert halves[key] == pytest.approx(whole[key], rel=1e-5), key


@pytest.mark.slow
@pytest.mark.parametrize("window", [None, 5])
def test_bits_per_pixel_is_the_priors_nats_over_ln2_and_the_pixel_grid(window):
    # UL: bits/pixel = L_z / ln 2 / (T H W), the batch mean over the Monte-Carlo draws of the
    # prior's rate (with `window`, over chunks of 5 frames), recomputed here under the same
    # global RNG state (the decodes draw from their own generators)
    from ulvideo import UnifiedLatents
    from ulvideo.evaluate.reconstruction import reconstruction_metrics
    from ulvideo.models import autoencoder_preset

    torch.manual_seed(0)
    model = UnifiedLatents(autoencoder_preset("tiny")).eval()
    videos = torch.rand(2, 3, 9, 16, 24, generator=torch.Generator().manual_seed(1)) * 2 - 1
    torch.manual_seed(7)
    bits = reconstruction_metrics(model, videos, 1, bits_draws=3, window=window)["bits_per_pixel"]
    torch.manual_seed(7)
    with torch.no_grad():
        z_clean = model.encode(videos, window)
        nats = [model.rate(z_clean, window).mean() for _ in range(3)]
    expected = float(sum(nats)) / 3 / math.log(2) / (9 * 16 * 24)
    assert bits == pytest.approx(expected, rel=1e-6)
