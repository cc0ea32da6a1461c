"""The KL arm of stage 1 (AutoencoderConfig.regularizer = "kl") and of stage 2 on its latents."""

import math

import pytest
import torch

from ulvideo.models import AutoencoderConfig, autoencoder_preset
from ulvideo.models.flops import params_per_part, training_flops_per_example
from ulvideo.ul import UnifiedLatents

KL = autoencoder_preset("tiny", regularizer="kl", kl_weight=1.0)


def constant_posterior(model: UnifiedLatents, mean: float, logvar: float) -> None:
    """Make the encoder output the posterior N(mean, exp(logvar)) in every latent dimension."""
    head, c = model.encoder.head, model.config.latent_channels
    with torch.no_grad():
        head.weight.zero_()
        head.bias[:c] = mean
        head.bias[c:] = logvar


def test_kl_rate_is_the_closed_form_in_nats_and_bits_per_pixel():
    torch.manual_seed(0)
    model = UnifiedLatents(KL)
    mean, logvar = 0.5, math.log(4.0)
    constant_posterior(model, mean, logvar)
    video = torch.rand(2, 3, 5, 32, 32) * 2 - 1
    dims = math.prod(model.latent_shape(5, 32, 32))  # 8 x 2 x 4 x 4
    # KL(N(0.5, 4) || N(0, 1)) = 1/2 (0.25 + 4 - 1 - ln 4) nats per dimension
    nats = dims * 0.5 * (mean**2 + 4.0 - 1.0 - math.log(4.0))
    torch.testing.assert_close(model.kl_rate(video), torch.full((2,), nats), rtol=1e-5, atol=0)
    out = model.stage1_loss(video)
    assert out["prior_nats"].item() == pytest.approx(nats, rel=1e-5)
    assert out["bits_per_pixel"].item() == pytest.approx(nats / math.log(2) / (5 * 32 * 32))
    assert out["bits_per_latent_dim"].item() == pytest.approx(nats / math.log(2) / dims)
    # a standard-normal posterior costs nothing
    constant_posterior(model, 0.0, 0.0)
    assert model.kl_rate(video).abs().max() < 1e-6


def test_kl_weight_scales_the_rate_term_and_zero_leaves_the_decoder_loss_alone():
    video = torch.rand(2, 3, 5, 32, 32) * 2 - 1
    losses = {}
    for beta in (0.0, 2.0):
        torch.manual_seed(0)
        model = UnifiedLatents(autoencoder_preset("tiny", regularizer="kl", kl_weight=beta))
        torch.manual_seed(1)  # the same posterior sample and decoder noise for both
        losses[beta] = model.stage1_loss(video)
    zero, two = losses[0.0], losses[2.0]
    assert zero["prior_nats"] > 0  # the KL is measured, but beta = 0 does not train on it
    torch.testing.assert_close(zero["loss"], zero["decoder_nats"])
    torch.testing.assert_close(zero["decoder_nats"], two["decoder_nats"])
    torch.testing.assert_close(
        two["loss"] - zero["loss"], 2.0 * two["prior_nats"], rtol=1e-5, atol=0
    )


def test_the_decoder_trains_on_a_posterior_sample_and_decodes_the_mean():
    torch.manual_seed(0)
    model = UnifiedLatents(KL)
    constant_posterior(model, 0.3, math.log(0.25))
    video = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    seen = []
    model.decoder.register_forward_hook(lambda m, args, out: seen.append(args[1].detach()))
    model.stage1_loss(video)
    z = seen[-1]
    # a sample of N(0.3, 0.25): mean 0.3, std 0.5 over 256 dimensions
    assert abs(z.mean().item() - 0.3) < 0.1 and abs(z.std().item() - 0.5) < 0.1
    z_clean = model.encode(video)
    assert torch.equal(model.noisy_latent(z_clean), z_clean)  # sampling time: the mean itself
    assert torch.allclose(z_clean, torch.full_like(z_clean, 0.3))


def test_kl_arm_shares_ul_networks_and_old_configs_load_as_ul():
    ul_config = autoencoder_preset("tiny")
    ul, kl = UnifiedLatents(ul_config), UnifiedLatents(KL)
    assert ul.encoder.head.out_channels == 8 and kl.encoder.head.out_channels == 16
    assert kl.prior is None and ul.prior is not None
    ul_state, kl_state = ul.state_dict(), kl.state_dict()
    assert {k for k in kl_state} == {k for k in ul_state if not k.startswith("prior.")}
    assert all(
        kl_state[k].shape == v.shape
        for k, v in ul_state.items()
        if "prior." not in k and "head" not in k
    )
    old = {k: v for k, v in ul_config.to_dict().items() if k not in ("regularizer", "kl_weight")}
    assert AutoencoderConfig.from_dict(old).regularizer == "ul"
    with pytest.raises(ValueError, match="regularizer must be one of"):
        autoencoder_preset("tiny", regularizer="vq")
    with pytest.raises(ValueError, match="kl_weight must be >= 0"):
        autoencoder_preset("tiny", regularizer="kl", kl_weight=-1.0)
    with pytest.raises(ValueError, match="no prior"):
        kl.rate(torch.zeros(1, 8, 2, 4, 4))
    with pytest.raises(ValueError, match="regularizer is 'ul'"):
        ul.posterior(torch.zeros(1, 3, 5, 32, 32))


def test_kl_stage1_counts_no_prior():
    ul_config = autoencoder_preset("tiny")
    ul_flops = {
        p: training_flops_per_example(ul_config, p, 17, 32, 32)
        for p in ("encoder", "decoder", "prior", "stage1")
    }
    kl_stage1 = training_flops_per_example(KL, "stage1", 17, 32, 32)
    kl_encoder = training_flops_per_example(KL, "encoder", 17, 32, 32)
    assert kl_encoder > ul_flops["encoder"]  # the log-variance channels of the head
    assert kl_stage1 == kl_encoder + ul_flops["decoder"]
    assert ul_flops["stage1"] == ul_flops["encoder"] + ul_flops["decoder"] + ul_flops["prior"]
    counts = params_per_part(KL)
    assert "prior" not in counts and counts["stage1"] == counts["encoder"] + counts["decoder"]


def test_streamed_posterior_equals_the_whole_clip():
    torch.manual_seed(0)
    model = UnifiedLatents(KL).eval()
    video = torch.rand(1, 3, 13, 32, 32) * 2 - 1
    whole, chunked = model.posterior(video), model.posterior(video, window=5)
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model.kl_rate(video, 5), model.kl_rate(video), rtol=1e-4, atol=1e-3)


def train_bits(beta: float, steps: int = 40) -> float:
    from ulvideo.data import build_dataset

    torch.manual_seed(0)
    model = UnifiedLatents(autoencoder_preset("tiny", regularizer="kl", kl_weight=beta))
    data = build_dataset("demo", None, "train", frames=5, resolution=32)
    clips = torch.stack([data[i][0] for i in range(32)])
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for step in range(steps):
        batch = clips[(step * 8) % 32 : (step * 8) % 32 + 8]
        loss = model.stage1_loss(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        nats = model.kl_rate(clips).mean()
    return nats.item() / math.log(2) / (5 * 32 * 32)


@pytest.mark.slow  # ~30 s on 2 cores
def test_a_larger_kl_weight_lowers_the_rate_after_the_same_training():
    bits = [train_bits(beta) for beta in (0.01, 0.3, 10.0)]
    assert bits[0] > bits[1] > bits[2], bits


# ---------------------------------------------------------------- stage 2 on KL latents


class ConstantBase(torch.nn.Module):
    """A base model whose clean-latent prediction is always `target` (what a base model that
    learned one latent exactly would predict)."""

    num_classes, given_embed = 0, None

    def __init__(self, target: torch.Tensor):
        super().__init__()
        self.target = torch.nn.Parameter(target, requires_grad=False)

    def forward(self, z_t, logsnr, labels=None, context_frames=0):
        return self.target.expand_as(z_t)


@pytest.mark.parametrize("regularizer", ["kl", "ul"])
def test_kl_sampling_runs_to_the_clean_latent_and_unscales_it(regularizer):
    from ulvideo.sample import SamplingConfig, sample_z0

    ul = UnifiedLatents(autoencoder_preset("tiny", regularizer=regularizer))
    latent = torch.randn(1, 8, 2, 4, 4)
    scale = 2.5 if regularizer == "kl" else 1.0  # UL latents keep their values (LatentScaling)
    sampling = SamplingConfig(base_steps=8, batch_size=1)
    z0 = sample_z0(
        ul, ConstantBase(latent * scale), latent.shape[1:], sampling, latent_multiplier=scale
    )
    if regularizer == "kl":  # the last step returns the prediction itself, unscaled
        torch.testing.assert_close(z0, latent)
    else:  # UL stops at lambda = 5, a noisy z0
        assert 0.01 < (z0 - latent).abs().max() < 0.5


def read_clip(path, frames: int) -> torch.Tensor:
    from ulvideo.cli import _read_video

    return _read_video(path, frames, 16)


def test_kl_stage1_and_stage2_export_load_sample_and_resume(tmp_path, monkeypatch, capsys):
    from test_train import kill_after_first_checkpoint, tiny

    from ulvideo.data import build_dataset
    from ulvideo.pipeline import Pipeline
    from ulvideo.sample import SamplingConfig
    from ulvideo.train import train

    kl_model = {"regularizer": "kl", "kl_weight": 0.1}
    s1 = train(tiny(tmp_path, "s1", model=kl_model, max_steps=4))
    export = tmp_path / "s1" / "final"
    ul = Pipeline.from_pretrained(export).autoencoder
    assert ul.config.regularizer == "kl" and ul.config.kl_weight == 0.1 and ul.prior is None
    torch.testing.assert_close(ul.encoder.head.weight, s1.ema.encoder.head.weight)
    # stage 1 measures the latent scale (1 / std) on the first 32 held-out clips when it exports;
    # stage 2 copies it into the base model's config, also when it resumes
    clips = build_dataset("demo", None, "test", frames=5, resolution=16)
    with torch.no_grad():
        z = ul.encode(torch.stack([clips[i][0] for i in range(32)]))
    expected = 1.0 / z.double().std(unbiased=False).item()
    assert ul.config.latent_scale == pytest.approx(expected, rel=1e-5)
    s2 = dict(stage=2, stage1_checkpoint=str(export), max_steps=4, checkpoint_every=2)
    kill_after_first_checkpoint(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(tmp_path, "s2", **s2))
    monkeypatch.undo()
    resumed = train(tiny(tmp_path, "s2", **s2))  # the scale comes back from the checkpoint
    pipeline = Pipeline.from_pretrained(tmp_path / "s2" / "final")
    assert pipeline.base_config.latent_scale == ul.config.latent_scale
    assert resumed.accelerator is not None and pipeline.autoencoder.config.regularizer == "kl"
    video = pipeline.generate(2, 5, 16, SamplingConfig(base_steps=4, decoder_steps=4))
    assert video.shape == (2, 3, 5, 16, 16) and torch.isfinite(video).all()
    # the command line on both exports: info, sample, reconstruct (the KL's bits), encode (the mean)
    import json

    from ulvideo.cli import main
    from ulvideo.media import write_mp4

    final = str(tmp_path / "s2" / "final")
    capsys.readouterr()
    assert main(["info", final, "--frames", "5"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (
        info["params"]["prior"] == 0
        and info["base_config"]["latent_scale"] == pipeline.base_config.latent_scale
    )
    assert main(["sample", "--checkpoint", final, "--num", "1", "--frames", "5", "--base_steps", "2",
                 "--decoder_steps", "2", "--out", str(tmp_path / "s")]) == 0  # fmt: skip
    write_mp4(torch.rand(3, 9, 16, 16) * 2 - 1, tmp_path / "in.mp4")
    capsys.readouterr()
    assert main(["reconstruct", "--checkpoint", str(export), "--input", str(tmp_path / "in.mp4"),
                 "--frames", "5", "--steps", "2", "--out", str(tmp_path / "r")]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    clip = read_clip(tmp_path / "in.mp4", 5)
    kl_bits = ul.kl_rate(clip).item() / math.log(2) / (5 * 16 * 16)
    assert report["bits_per_pixel"] == pytest.approx(kl_bits, rel=1e-4)
    assert main(["encode", "--checkpoint", str(export), "--input", str(tmp_path / "in.mp4"),
                 "--frames", "5", "--out", str(tmp_path / "z.safetensors")]) == 0  # fmt: skip
    from safetensors.torch import load_file

    torch.testing.assert_close(
        load_file(tmp_path / "z.safetensors")["z_clean"], ul.encode(clip), rtol=1e-4, atol=1e-5
    )
