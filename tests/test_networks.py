"""Encoder, decoder, prior/base transformer, presets and FLOP counting."""

import json

import pytest
import torch
import torch.nn.functional as F

from ulvideo.models import (
    AUTOENCODER_PRESETS,
    AutoencoderConfig,
    BaseConfig,
    Decoder,
    Encoder,
    autoencoder_preset,
    base_preset,
    build_base,
    build_prior,
    count_params,
    params_per_part,
    training_flops_per_example,
)
from ulvideo.nn import (
    Conv3d,
    ResBlock3d,
    TransformerBlock,
    Upsample3d,
    enable_activation_checkpointing,
    frame_group_norm,
    patchify,
    sincos_3d,
    unpatchify,
)

TINY = autoencoder_preset("tiny")


@pytest.fixture(scope="module")
def tiny_encoder():
    torch.manual_seed(0)
    return Encoder(TINY).eval()


# ---------------------------------------------------------------- shapes in every preset


@pytest.mark.parametrize("preset", sorted(AUTOENCODER_PRESETS))
@pytest.mark.parametrize("frames", [1, 17])
def test_shapes_for_images_and_videos(preset, frames):
    cfg = autoencoder_preset(preset)
    base_cfg = base_preset(preset, latent_channels=cfg.latent_channels)
    side = 32 if preset == "tiny" else 128  # small/medium run on the meta device: shapes only
    device = "cpu" if preset == "tiny" else "meta"
    with torch.device(device):
        enc, dec, prior, base = Encoder(cfg), Decoder(cfg), build_prior(cfg), build_base(base_cfg)
        video = torch.rand(2, 3, frames, side, side) * 2 - 1
        logsnr = torch.tensor([-3.0, 4.0])
    latent = (2, cfg.latent_channels, 1 + (frames - 1) // 4, side // 8, side // 8)
    with torch.no_grad():
        z = enc(video)
        assert tuple(z.shape) == latent
        assert dec(video, z, logsnr).shape == video.shape
        assert prior(z, logsnr).shape == z.shape
        assert base(z, logsnr).shape == z.shape
        if frames > 1:
            assert base(z, logsnr, context_frames=1).shape == z.shape


def test_sixteen_x_spatial_override_shapes():
    # ImageNet setting: 16x spatial, 32 latent channels, images; on meta (shapes only)
    cfg = autoencoder_preset(
        "small", spatial_downsample=16, temporal_downsample=1, latent_channels=32
    )
    with torch.device("meta"):
        x = torch.zeros(1, 3, 1, 256, 256)
        z = Encoder(cfg)(x)
        assert tuple(z.shape) == (1, 32, 1, 16, 16)
        assert Decoder(cfg)(x, z, torch.zeros(1)).shape == x.shape


def test_four_x_spatial_with_four_x_temporal_takes_temporal_only_decoder_levels():
    # 4x4x4: the decoder's first transition halves space (with time), the second time alone, so
    # the tiny preset's three levels fit; a 2x2-patched 32 px clip meets z0 on an 8x8 grid
    cfg = autoencoder_preset("tiny", spatial_downsample=4)
    x = torch.zeros(1, 3, 9, 32, 32)
    z = Encoder(cfg)(x)
    assert tuple(z.shape) == (1, 8, 3, 8, 8)
    decoder = Decoder(cfg)
    assert [d.conv.stride for d in decoder.downs] == [(2, 2, 2), (2, 1, 1)]
    assert decoder(x, z, torch.zeros(1)).shape == x.shape
    with pytest.raises(ValueError, match="has 2 levels; with 4x4x4 compression it needs between 3"):
        autoencoder_preset(
            "tiny", spatial_downsample=4, decoder_channels=(8, 8), decoder_blocks=(1, 1)
        )


@pytest.mark.parametrize("spatial_downsample", [4, 8])
def test_decoder_reads_z0_at_its_stem_where_the_encoder_took_it_from(spatial_downsample):
    # pixel frame f meets latent frame ceil(f / 4), the one the causal encoder folded it into, and
    # each latent cell covers its (sd/2)^2 cells of the 2x2-patched stem grid
    cfg = autoencoder_preset("tiny", spatial_downsample=spatial_downsample)
    decoder = Decoder(cfg)
    z0 = torch.arange(3 * 2 * 2.0).view(1, 1, 3, 2, 2).expand(1, 8, 3, 2, 2)
    grid = decoder.latent_on_stem_grid(z0)
    p = spatial_downsample // 2
    assert grid.shape == (1, 8, 9, 2 * p, 2 * p)
    frames = [int(grid[0, 0, f, 0, 0]) // 4 for f in range(9)]
    assert frames == [0, 1, 1, 1, 1, 2, 2, 2, 2]
    assert int(grid[0, 0, 0, p - 1, p]) == 1 and int(grid[0, 0, 0, p, p - 1]) == 2
    # with the transformer's z0 input switched off, the output still follows z0
    torch.nn.init.zeros_(decoder.latent_in.weight)
    x_t, z = torch.randn(1, 3, 9, 16, 16), torch.zeros(1, 8, 3, *[16 // spatial_downsample] * 2)
    with torch.no_grad():
        gap = decoder(x_t, z + 1, torch.zeros(1)) - decoder(x_t, z, torch.zeros(1))
    assert gap.abs().mean() > 1e-3


# ---------------------------------------------------------------- causality of the encoder


def test_encoder_is_causal(tiny_encoder):
    g = torch.Generator().manual_seed(1)
    video = torch.rand(1, 3, 13, 16, 16, generator=g) * 2 - 1
    with torch.no_grad():
        z = tiny_encoder(video)
        for k in range(3):  # latent frame k sees pixel frames <= 4k
            changed = video.clone()
            changed[:, :, 4 * k + 1 :] = torch.rand(changed[:, :, 4 * k + 1 :].shape, generator=g)
            z2 = tiny_encoder(changed)
            torch.testing.assert_close(z2[:, :, : k + 1], z[:, :, : k + 1], rtol=0, atol=1e-5)
            assert (z2[:, :, k + 1] - z[:, :, k + 1]).abs().max() > 1e-3


def test_image_equals_first_frame_of_video(tiny_encoder):
    g = torch.Generator().manual_seed(2)
    video = torch.rand(2, 3, 9, 32, 16, generator=g) * 2 - 1
    with torch.no_grad():
        z_video = tiny_encoder(video)
        z_image = tiny_encoder(video[:, :, :1])
    assert z_image.shape[2] == 1
    torch.testing.assert_close(z_image, z_video[:, :, :1], rtol=0, atol=1e-5)


# ---------------------------------------------------------------- bad inputs


def test_encoder_rejects_bad_videos(tiny_encoder):
    with pytest.raises(ValueError, match="4 channels, the model expects 3"):
        tiny_encoder(torch.zeros(1, 4, 5, 16, 16))
    with pytest.raises(
        ValueError, match=r"6 frames.*1 \+ 4k frames \(1, 5, 9, .*use 5 or 9 frames"
    ):
        tiny_encoder(torch.zeros(1, 3, 6, 16, 16))
    with pytest.raises(ValueError, match="20x16; height and width must be divisible by .*=8"):
        tiny_encoder(torch.zeros(1, 3, 5, 20, 16))
    with pytest.raises(ValueError, match="B x C x T x H x W .*unsqueeze"):
        tiny_encoder(torch.zeros(1, 3, 16, 16))


def test_decoder_rejects_mismatched_latent():
    dec = Decoder(TINY)
    with pytest.raises(
        ValueError, match=r"z0 has shape \(1, 8, 1, 2, 2\).*needs latents \(1, 8, 2, 2, 2\)"
    ):
        dec(torch.zeros(1, 3, 5, 16, 16), torch.zeros(1, 8, 1, 2, 2), torch.zeros(1))
    with pytest.raises(ValueError, match=r"logsnr must have shape \(B,\)"):
        dec(torch.zeros(1, 3, 5, 16, 16), torch.zeros(1, 8, 2, 2, 2), torch.zeros(()))


def test_transformer_rejects_bad_inputs():
    base = build_base(base_preset("tiny", num_classes=10))  # two levels: grid must be even
    z, logsnr = torch.zeros(2, 8, 3, 2, 2), torch.zeros(2)
    with pytest.raises(ValueError, match="z_t must be B x 8"):
        base(torch.zeros(2, 4, 3, 2, 2), logsnr)
    with pytest.raises(ValueError, match="latent grid 3x3 must be divisible by 2"):
        base(torch.zeros(2, 8, 3, 3, 3), logsnr)
    with pytest.raises(ValueError, match="LongTensor"):
        base(z, logsnr, labels=torch.tensor([3.0, 1.0]))
    with pytest.raises(ValueError, match="fewer than the 3 latent frames"):
        base(z, logsnr, context_frames=3)
    with pytest.raises(ValueError, match="unconditional model"):
        build_prior(TINY)(z, logsnr, labels=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="context=True"):
        build_prior(TINY)(z, logsnr, context_frames=1)


# ---------------------------------------------------------------- transformer conditioning


def randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    # Give zero-initialised AdaLN / embedding weights random values so conditioning is visible
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return module.eval()


def test_labels_null_class_and_context_frames_condition_the_base():
    base = randomise(build_base(base_preset("tiny", num_classes=5)))
    g = torch.Generator().manual_seed(3)
    z, logsnr = torch.randn(2, 8, 3, 2, 2, generator=g), torch.tensor([1.0, -2.0])
    with torch.no_grad():
        unconditional = base(z, logsnr)
        null = base(z, logsnr, labels=torch.tensor([5, 5]))
        labelled = base(z, logsnr, labels=torch.tensor([0, 4]))
        context = base(z, logsnr, context_frames=1)
    torch.testing.assert_close(null, unconditional, rtol=0, atol=0)  # None == the null class
    assert (labelled - null).abs().amax(dim=(1, 2, 3, 4)).min() > 1e-3
    assert (context - unconditional).abs().max() > 1e-3


def test_prior_outputs_x_prediction_consistent_with_v_parameterisation():
    # x = alpha z_t - sigma v. At log-SNR +30 (alpha ~ 1, sigma ~ 3e-7) x_hat is z_t itself; at -30
    # (alpha ~ 3e-7, sigma ~ 1) it is -v, of the network's own scale, where an eps-parameterised
    # x = (z_t - sigma eps) / alpha would be ~1e6 times larger.
    prior = randomise(build_prior(TINY))
    z = torch.randn(2, 8, 2, 4, 4, generator=torch.Generator().manual_seed(6))
    raw = []
    prior.patch_out.register_forward_hook(lambda module, args, out: raw.append(out))
    with torch.no_grad():
        x_hat = prior(z, torch.tensor([30.0, 30.0]))
        torch.testing.assert_close(x_hat, z, rtol=0, atol=1e-5)
        x_hat = prior(z, torch.tensor([-30.0, -30.0]))
    v = unpatchify(raw[-1].permute(0, 4, 1, 2, 3), prior.patch_size)  # the network's output
    assert 0.01 < v.abs().mean() < 10
    torch.testing.assert_close(x_hat, -v, rtol=0, atol=1e-5)


# ---------------------------------------------------------------- building blocks


def test_conv3d_frame_counts_and_causality():
    g = torch.Generator().manual_seed(4)
    for causal in (True, False):
        conv = Conv3d(2, 3, stride=(2, 2), causal=causal)
        for m in range(4):  # 1 + 2m frames -> 1 + m frames, H/2
            assert conv(torch.zeros(1, 2, 1 + 2 * m, 8, 8)).shape == (1, 3, 1 + m, 4, 4)
    conv = Conv3d(2, 3, causal=True)
    x = torch.randn(1, 2, 6, 4, 4, generator=g)
    y = x.clone()
    y[:, :, 3:] += 1.0
    with torch.no_grad():
        torch.testing.assert_close(conv(x)[:, :, :3], conv(y)[:, :, :3], rtol=0, atol=0)


def test_patchify_roundtrip_and_layout():
    x = torch.arange(2 * 3 * 2 * 4 * 6, dtype=torch.float32).reshape(2, 3, 2, 4, 6)
    p = patchify(x, 2)
    assert p.shape == (2, 12, 2, 2, 3)
    # channel (c, i, j) of patch (y, x) holds pixel (2y + i, 2x + j) of channel c
    assert p[1, 2 * 4 + 1 * 2 + 0, 1, 1, 2] == x[1, 2, 1, 3, 4]
    torch.testing.assert_close(unpatchify(p, 2), x, rtol=0, atol=0)


def test_frame_group_norm_equals_group_norm_per_frame():
    x = torch.randn(2, 8, 3, 5, 5) * 3 + 1
    per_frame = F.group_norm(x.transpose(1, 2).reshape(6, 8, 5, 5), 4, eps=1e-6)
    expected = per_frame.reshape(2, 3, 8, 5, 5).transpose(1, 2)
    torch.testing.assert_close(frame_group_norm(x, 4), expected, rtol=1e-5, atol=1e-5)


def test_upsample_time_keeps_frame_j_at_position_2j():
    up = Upsample3d(2, 2, spatial=2, temporal=2, causal=False)
    with torch.no_grad():  # make the conv an identity to look at the interpolation alone
        up.conv.weight.zero_()
        up.conv.bias.zero_()
        up.conv.weight[:, :, 1, 1, 1] = torch.eye(2)
    x = torch.randn(1, 2, 3, 2, 2)
    y = up(x)
    assert y.shape == (1, 2, 5, 4, 4)
    torch.testing.assert_close(y[:, :, ::2, ::2, ::2], x, rtol=0, atol=1e-6)
    torch.testing.assert_close(
        y[:, :, 1, ::2, ::2], (x[:, :, 0] + x[:, :, 1]) / 2, rtol=0, atol=1e-6
    )


def test_sincos_3d_is_factorised():
    pos = sincos_3d(3, 4, 5, 64).view(3, 4, 5, 64)
    d_hw = 2 * (64 // 6)
    d_t = 64 - 2 * d_hw
    time_part, row_part = pos[..., :d_t], pos[..., d_t : d_t + d_hw]
    assert torch.equal(time_part, time_part[:, :1, :1].expand_as(time_part))  # time only
    assert torch.equal(row_part, row_part[:1, :, :1].expand_as(row_part))  # row only
    assert not torch.equal(time_part[0], time_part[1])


@pytest.mark.parametrize("mode", ["factorised", "full"])
def test_blocks_compile_without_graph_breaks(mode):
    explain = torch._dynamo.explain
    block = TransformerBlock(64, 2, 32, mode)
    assert explain(block)(torch.randn(2, 3, 4, 64), torch.randn(2, 32)).graph_break_count == 0
    res = ResBlock3d(8, 16, cond_dim=32)
    assert explain(res)(torch.randn(1, 8, 3, 4, 4), torch.randn(1, 32)).graph_break_count == 0


def test_activation_checkpointing_gives_identical_gradients():
    cfg = autoencoder_preset("tiny", prior_widths=(64, 64), prior_depths=(2, 2))
    torch.manual_seed(0)
    plain = build_prior(cfg)
    ckpt = enable_activation_checkpointing(build_prior(cfg))
    ckpt.load_state_dict(plain.state_dict())
    z, logsnr = torch.randn(2, 8, 3, 2, 2), torch.tensor([0.5, 2.0])
    grads = []
    for model in (plain, ckpt):
        model(z, logsnr).square().sum().backward()
        grads.append([p.grad for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- presets


def test_preset_registry_errors_and_json_roundtrip():
    with pytest.raises(
        ValueError,
        match=r"unknown autoencoder preset 'huge'; valid presets: \['medium', 'small', 'tiny'\]",
    ):
        autoencoder_preset("huge")
    with pytest.raises(ValueError, match=r"unknown base preset 'huge'"):
        base_preset("huge")
    with pytest.raises(
        ValueError, match=r"unknown AutoencoderConfig field\(s\) \['latent_chans'\]"
    ):
        autoencoder_preset("tiny", latent_chans=4)
    with pytest.raises(ValueError, match=r"unknown BaseConfig field\(s\) \['base_widths'\]"):
        base_preset("tiny", base_widths=(64, 128))  # the stage-2 sizes have their own config
    with pytest.raises(ValueError, match=r"base depths \[3, 2\]: every level but the last"):
        base_preset("tiny", depths=(3, 2))
    with pytest.raises(ValueError, match="temporal_downsample must be 1, 2 or 4"):
        autoencoder_preset("tiny", temporal_downsample=3)
    with pytest.raises(ValueError, match="decoder_channels has 4 levels"):
        autoencoder_preset("tiny", decoder_channels=(8, 8, 8, 8), decoder_blocks=(1, 1, 1, 1))
    cfg = autoencoder_preset("medium")
    again = AutoencoderConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.encoder_channels == (128, 256, 512, 512)
    base = base_preset("medium", num_classes=600)
    assert BaseConfig.from_dict(json.loads(json.dumps(base.to_dict()))) == base
    assert not hasattr(cfg, "num_classes") and not hasattr(base, "encoder_channels")
    assert AUTOENCODER_PRESETS["tiny"]["resolution"] == 32  # presets are plain data


def test_small_preset_follows_paper_sizes():
    cfg = autoencoder_preset("small")
    assert (cfg.spatial_downsample, cfg.temporal_downsample) == (8, 4)  # K600: 4x8x8
    assert cfg.encoder_channels == (128, 256, 512, 512) and cfg.encoder_blocks == (2, 2, 2, 3)
    base = base_preset("small")
    assert base.widths == (512, 1024) and base.depths == (6, 16)
    assert base.dropout == 0.1 and base.patch_size == 1


# ---------------------------------------------------------------- parameter and FLOP counts


def transformer_forward_flops(cfg: AutoencoderConfig, t: int, h: int, w: int, mode: str) -> int:
    # Closed form for a one-level prior (paper counting: 2 x MACs of linears + attention matmuls)
    d, c, n, blocks = cfg.prior_widths[0], cfg.latent_channels, t * h * w, cfg.prior_depths[0]
    mlp = 2 * int(cfg.mlp_ratio * d) * d
    if mode == "factorised":
        per_token = 2 * 4 * d * d + mlp + 2 * (h * w) * d + 2 * t * d
        modulation = d * 6 * d
    else:
        per_token = 4 * d * d + mlp + 2 * n * d
        modulation = d * 4 * d
    macs = n * per_token * blocks + blocks * modulation
    macs += 256 * d + d * d  # log-SNR embedding MLP
    macs += n * c * d + n * d * c + d * 2 * d  # patch in, patch out, output AdaLN
    return 2 * macs


@pytest.mark.parametrize("mode", ["factorised", "full"])
def test_prior_flops_match_closed_form(mode):
    cfg = autoencoder_preset("small", attention=mode)
    expected = 3 * transformer_forward_flops(cfg, 5, 16, 16, mode)
    assert training_flops_per_example(cfg, "prior", 17, 128, 128) == expected


def test_stage_flops_add_up_and_params_count():
    cfg, base = autoencoder_preset("tiny"), base_preset("tiny")
    parts = {
        p: training_flops_per_example(cfg, p, 17, 32, 32, base_config=base)
        for p in ("encoder", "prior", "decoder", "base")
    }
    assert (
        training_flops_per_example(cfg, "stage1", 17, 32, 32)
        == parts["encoder"] + parts["prior"] + parts["decoder"]
    )
    assert training_flops_per_example(cfg, "stage2", 17, 32, 32, base_config=base) == parts["base"]
    with pytest.raises(ValueError, match="part 'stage2' is the base model: pass its base_config"):
        training_flops_per_example(cfg, "stage2", 17, 32, 32)
    # the encoder's first conv alone: 2 * 27 * (12 * 32) MACs at each of 17 x 16 x 16 positions, x3
    assert parts["encoder"] > 3 * 2 * 27 * 12 * 32 * 17 * 16 * 16
    with pytest.raises(ValueError, match="unknown part 'vae'; valid parts: encoder, decoder"):
        training_flops_per_example(cfg, "vae", 17, 32, 32)
    with pytest.raises(ValueError, match="1 \\+ 4k frames"):
        training_flops_per_example(cfg, "stage1", 16, 32, 32)
    counts = params_per_part(cfg, base)
    assert counts["encoder"] == count_params(Encoder(cfg))
    assert counts["stage1"] == counts["encoder"] + counts["prior"] + counts["decoder"]
    assert counts["stage2"] == count_params(build_base(base))
    assert "stage2" not in params_per_part(cfg)


def test_medium_is_larger_than_small():
    small, medium = (
        params_per_part(autoencoder_preset(name), base_preset(name)) for name in ("small", "medium")
    )
    assert medium["base"] > 2 * small["base"] > 0
    assert medium["prior"] > small["prior"]
