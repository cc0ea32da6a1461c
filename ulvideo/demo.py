"""`ulvideo demo`: the whole UL pipeline on the embedded moving-digits data, on a CPU, in minutes.

Stage 1 (encoder + prior + decoder) -> stage 2 (class-conditional base model that also does frame
prediction) -> samples -> reconstructions -> metrics.json, a loss plot and a summary.
"""

import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from .media import side_by_side, write_gif, write_mp4, write_png_grid
from .sample import SamplingConfig
from .student import choose_decoder
from .train import TrainConfig, train
from .train.config import short_run_warmup
from .train.metrics import read_metrics

FRAMES, RESOLUTION, CONTEXT_PIXEL_FRAMES = 17, 32, 5


@dataclass
class DemoConfig:
    out: str = "demo_out"
    # stage 1 trains on short clips (3.4x cheaper a step than 17 frames, so more steps fit the
    # budget); the causal encoder and the decoder then take the 17-frame clips of stage 2
    stage1_steps: int = 1100
    stage1_frames: int = 5
    # the latent grid: 4x (8x8 latents of 32x32 frames) lets the tiny decoder draw digit shapes,
    # 8x does not within the budget (docs/STAGE1_DIAGNOSTICS.md, "Shapes"); the base model
    # patches the finer grid 2x2, so stage 2 costs what it does at 8x
    spatial_downsample: int = 4
    # c_lf and b, the two rate knobs (UL_METHOD §4): at this budget c_lf 6 keeps shape detail
    # that c_lf 2 and 4 give up for rate (docs/STAGE1_DIAGNOSTICS.md, "The demo's loss factor")
    loss_factor: float = 6.0
    decoder_bias: float = 2.0
    stage2_steps: int = 1100
    stage2_batch_size: int = 64
    stage2_lr: float = 3e-3
    batch_size: int = 16  # stage 1, and the encoding and sampling batches
    num_videos: int = 16  # per sampling mode, and the number of reconstructions
    base_steps: int = 16  # SamplingConfig's: within 5% of 64 steps on these models
    decoder_steps: int = 32
    # distil the decoder into a student of this many steps after stage 1 (0: none), and which
    # decoder samples and reconstructs: auto | student | teacher (ulvideo.student)
    distill_steps: int = 0
    decoder: str = "auto"
    method: str = "ddpm"  # the sampler and its grid (SamplingConfig), both models
    grid: str = "t"
    # class accuracy of the demo's samples rises with CFG up to 8, bounded by that of the
    # reconstructions (docs/STAGE1_DIAGNOSTICS.md, "Stage 2")
    cfg_scale: float = 6.0
    fvd: bool = True  # FVD / rFVD with the real I3D, when its weights are installed
    seed: int = 0


def common_settings(config: DemoConfig) -> dict:
    """The training settings both of the demo's stages share."""
    return dict(
        data="demo",
        resolution=RESOLUTION,
        num_workers=0,
        seed=config.seed,
        log_every=25,
        keep_last=1,
        resume=None,
    )


def stage1_config(config: DemoConfig, output_dir) -> TrainConfig:
    """The demo's stage 1 (also `ulvideo compare-latents`' defaults on the demo data)."""
    return TrainConfig(
        stage=1,
        preset="tiny",
        model={
            "loss_factor": config.loss_factor,
            "decoder_bias": config.decoder_bias,
            "spatial_downsample": config.spatial_downsample,
        },
        output_dir=str(output_dir),
        batch_size=config.batch_size,
        lr=1e-3,
        frames=config.stage1_frames,
        max_steps=config.stage1_steps,
        lr_warmup_steps=short_run_warmup(config.stage1_steps),
        # the latent warm-up: 1/4 of stage 1 held, 1/4 ramped to plain UL, the last half plain UL
        latent_hold_steps=config.stage1_steps // 4,
        latent_ramp_steps=config.stage1_steps // 4,
        checkpoint_every=config.stage1_steps,
        eval_every=max(1, config.stage1_steps // 2),  # after the warm-up, and at the end
        eval_decode_steps=config.decoder_steps,
        **common_settings(config),
    )


def base_patch_size(spatial_downsample: int) -> int:
    """The base model's patch: 2x2 on a 4x latent grid, so stage 2 costs what it does at 8x."""
    return max(1, 8 // spatial_downsample)


def run_demo(config: DemoConfig) -> dict:
    """Run every step of the demo and return the metrics written to `<out>/metrics.json`."""
    choose_decoder(
        None, config.decoder_steps, "teacher" if config.distill_steps else config.decoder
    )
    sampling = SamplingConfig(  # checks the sampler's names before training
        base_steps=config.base_steps,
        decoder_steps=config.decoder_steps,
        method=config.method,
        grid=config.grid,
        cfg_scale=config.cfg_scale,
        batch_size=config.batch_size,
        seed=config.seed,
        decoder=config.decoder,
    )
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    print(
        f"[1/5] stage 1: encoder + prior + decoder, {config.stage1_steps} steps on "
        f"{config.stage1_frames}-frame clips (loss factor {config.loss_factor}, decoder bias "
        f"{config.decoder_bias})"
    )
    s1 = stage1_config(config, out / "stage1")
    train(s1)
    if config.distill_steps:
        from .train.distill import DistillConfig, distill

        print(f"      distilling the decoder into a {config.distill_steps}-step student")
        start_steps = max(4, config.distill_steps)
        distill(DistillConfig(str(out / "stage1" / "final"), config.distill_steps, start_steps,
                              teacher_steps=8 * start_steps, data="demo",
                              frames=config.stage1_frames, seed=config.seed))  # fmt: skip
    print(f"[2/5] stage 2: base model on frozen latents, {config.stage2_steps} steps")
    # UL §5: stage 2 needs only the frozen encoder's latents, and the demo clips are fixed, so
    # each is encoded once rather than at every step (2000 encodes against 16000)
    from .data import build_dataset
    from .pipeline import load_autoencoder
    from .train.latents import precompute_latents

    train_clips = build_dataset("demo", None, "train", frames=FRAMES, resolution=RESOLUTION)
    precompute_latents(
        load_autoencoder(out / "stage1" / "final"),
        train_clips,
        out / "stage2_latents",
        batch_size=config.batch_size,
    )
    # the latents' scale comes with the stage-1 export (ulvideo.latent_scale)
    s2 = TrainConfig(
        stage=2,
        base_preset="tiny",
        model={"patch_size": base_patch_size(config.spatial_downsample)},
        output_dir=str(out / "stage2"),
        batch_size=config.stage2_batch_size,
        lr=config.stage2_lr,
        stage1_checkpoint=str(out / "stage1" / "final"),
        latents_dir=str(out / "stage2_latents"),
        frames=FRAMES,
        class_conditional=True,
        label_dropout=0.1,
        context_frames=5,
        context_prob=0.5,
        max_steps=config.stage2_steps,
        lr_warmup_steps=short_run_warmup(config.stage2_steps),
        checkpoint_every=config.stage2_steps,
        eval_every=config.stage2_steps,
        **common_settings(config),
    )
    train(s2)

    from .pipeline import Pipeline

    pipeline = Pipeline.from_pretrained(out / "stage2" / "final")
    test = build_dataset("demo", None, "test", frames=FRAMES, resolution=RESOLUTION)
    n = min(config.num_videos, len(test))
    real = torch.stack([test[i][0] for i in range(n)])
    labels = torch.tensor([test[i][1] for i in range(n)])

    print(
        f"[3/5] sampling {n} videos each: class-conditional (CFG {config.cfg_scale}), unconditional, frame prediction"
    )
    null = torch.full((n,), pipeline.base.num_classes)
    context = real[:, :, :CONTEXT_PIXEL_FRAMES]
    samples = {
        "class_conditional": pipeline.generate(n, FRAMES, RESOLUTION, sampling, labels=labels),
        "unconditional": pipeline.generate(
            n, FRAMES, RESOLUTION, replace(sampling, cfg_scale=1.0), labels=null
        ),
        "frame_prediction": pipeline.generate(
            n, FRAMES, RESOLUTION, sampling, labels=labels, context=context
        ),
    }
    print(f"[4/5] reconstructing {n} test clips, from their own latents and from swapped ones")
    from .evaluate.reconstruction import reconstruction_metrics

    student = pipeline.choose_decoder(config.decoder_steps, config.decoder)
    usage = reconstruction_metrics(
        pipeline.autoencoder, real, config.decoder_steps, seed=config.seed,
        method=config.method, grid=config.grid, student=student,
    )  # fmt: skip
    recon = usage["recon"]

    for name, videos in samples.items():
        for i, video in enumerate(videos[:4]):
            write_mp4(video, out / "samples" / f"{name}_{i}.mp4")
        write_png_grid(videos[:8], out / "samples" / f"{name}.png")
    for i in range(min(4, n)):
        panel = side_by_side(real[i], recon[i], samples["frame_prediction"][i])
        write_mp4(panel, out / "reconstructions" / f"real_recon_sample_{i}.mp4")
        write_gif(panel, out / "reconstructions" / f"real_recon_sample_{i}.gif")
    write_png_grid(
        torch.cat([real[:4], recon[:4]]), out / "reconstructions" / "real_then_recon.png"
    )

    print("[5/5] metrics")
    metrics = _metrics(config, real, labels, usage, samples)
    metrics["decoder"] = "teacher" if student is None else f"student ({student.steps} steps)"
    metrics["wall_time_s"] = round(time.perf_counter() - start, 1)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    _plot_stage1(out / "stage1", out / "stage1_losses.png")
    summary = _summary(metrics, out)
    (out / "summary.txt").write_text(summary)
    print(summary)
    return metrics


def _metrics(config: DemoConfig, real, labels, usage, samples) -> dict:
    from .evaluate.digits import class_accuracy

    own, swapped = float(usage["psnr"].mean()), float(usage["psnr_swapped"].mean())
    digit_size = RESOLUTION // 2  # MovingDigits draws digits half the canvas wide
    metrics = {
        "bits_per_pixel": usage["bits_per_pixel"],
        "psnr": own,
        "psnr_swapped_latent": swapped,
        "latent_gap_db": own - swapped,
        "ssim": float(usage["ssim"].mean()),
        "num_videos": len(real),
        # the fraction of videos a digit classifier assigns to the requested label; the
        # reconstructions' score bounds what stage 2 can show through this decoder
        "class_accuracy": {
            "reconstruction": class_accuracy(usage["recon"], labels, digit_size),
            **{
                name: class_accuracy(samples[name], labels, digit_size)
                for name in ("class_conditional", "unconditional")
            },
        },
    }
    metrics["fvd"] = _fvd(config, real, usage["recon"], samples)
    return metrics


def _fvd(config: DemoConfig, real, recon, samples) -> dict:
    if not config.fvd:
        return {"skipped": "disabled by --fvd false"}
    from .evaluate.fvd import fvd_report, protocol_settings, video_features
    from .evaluate.i3d import load_i3d

    try:
        i3d = load_i3d()
    except FileNotFoundError as err:
        return {"skipped": str(err)}
    protocol = protocol_settings(i3d, "tfgan")
    real_features = video_features(real, i3d, "tfgan")  # the first 16 frames, as FVD takes
    sets = {"rfvd": recon, **samples}
    result = {
        k: fvd_report(real_features, video_features(v, i3d, "tfgan"), 1, protocol, len(v))["fvd"]
        for k, v in sets.items()
    }
    result["note"] = (
        f"FVD protocol tfgan; {len(real)} videos per set: far too few for leaderboard numbers"
    )
    return result


def _plot_stage1(run_dir: Path, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for r in read_metrics(run_dir) if "loss" in r]
    steps = [r["step"] for r in records]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    axes[0].plot(steps, [r["prior_nats"] for r in records], label="prior (nats)")
    axes[0].plot(steps, [r["decoder_nats"] for r in records], label="decoder (nats)")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("step")
    axes[0].legend()
    axes[1].plot(steps, [r["bits_per_pixel"] for r in records], color="C2")
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("bits / pixel")
    fig.suptitle("UL stage 1 on moving digits")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _summary(metrics: dict, out: Path) -> str:
    fvd, accuracy = metrics["fvd"], metrics["class_accuracy"]
    fmt = lambda v: f"{v:.1f}" if isinstance(v, float) and math.isfinite(v) else str(v)  # noqa: E731
    lines = [
        f"ulvideo demo finished in {metrics['wall_time_s']:.0f} s; outputs in {out}/",
        f"  latent rate     {metrics['bits_per_pixel']:.4f} bits/pixel",
        f"  reconstruction  PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.3f} ({metrics['num_videos']} test clips)",
        f"  latent used     PSNR {metrics['psnr_swapped_latent']:.2f} dB from another clip's latent"
        f" ({metrics['latent_gap_db']:.1f} dB worse)",
        f"  class accuracy  {accuracy['class_conditional']:.0%} class-conditional, "
        f"{accuracy['unconditional']:.0%} unconditional (chance 10%); "
        f"{accuracy['reconstruction']:.0%} of reconstructions",
    ]
    if "skipped" in fvd:
        lines.append(f"  FVD             skipped: {fvd['skipped']}")
    else:
        lines.append(
            "  FVD (I3D)       " + ", ".join(f"{k} {fmt(v)}" for k, v in fvd.items() if k != "note")
        )
    lines.append(
        "  files           samples/*.mp4, reconstructions/*.mp4, metrics.json, stage1_losses.png"
    )
    return "\n".join(lines) + "\n"
