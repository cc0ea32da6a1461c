"""Quality against network evaluations (NFE) of every sampler and grid on a trained demo pipeline,
with the 64-step ancestral sampler (ddpm, grid t) as the reference. Prints JSON.

    python benchmarks/bench_sampler_nfe.py --export DEMO_OUT/stage2/final \\
        --out benchmarks/results/sampler_nfe_cpu.json

- decoder: the held-out demo clips (test split) encoded, noised to lambda = 5 under per-video
  seeds, and decoded by each setting: PSNR against the clips, its gap to the reference's, the
  digit classifier's accuracy on the reconstructions, the detail ratio (mean |Laplacian| of the
  reconstructions over the clips': blur lowers it, and raises PSNR), seconds per video, and with
  --fvd the rFVD (I3D, protocol tfgan) against the clips.
- base model: class-conditional z0 (the demo's CFG scale) drawn by each setting from the same
  per-video noise, all decoded by one decoder setting (--base_decoder), scored by the digit
  classifier: class accuracy, and the share of videos classified as the reference's video of the
  same noise (paired, so far less noisy than two accuracies), seconds per video of the base model;
  with --fvd the FVD against the held-out clips.

- end to end (--e2e_settings): whole class-conditional generations (Pipeline.generate) by a base
  setting and a decoder, the teacher by the same sampler or the distilled student: FLOPs per
  video (CFG's two base passes included), seconds per video measured side by side in this run,
  class accuracy and, with --fvd, FVD against as many held-out clips, with the FVD of the first
  setting under a second seed as the noise floor of the FVD comparison.

A setting is METHOD/GRID/STEPS (e.g. dpmpp-2m/logsnr/8); NFE counts Heun's 2 evaluations a step
(ulvideo.diffusion.nfe), and the base model's NFE are doubled by CFG in FLOPs, not here. An end
to end setting is BASE_SETTING+teacher/STEPS or BASE_SETTING+student/STEPS (the student needs an
export holding one: ulvideo distill).
"""

import argparse
import time

import torch
from common import add_common_arguments, emit, machine, setup

from ulvideo.data import build_dataset
from ulvideo.demo import FRAMES, RESOLUTION
from ulvideo.diffusion import StackedRandomGenerator, nfe
from ulvideo.evaluate.digits import class_accuracy, classify_videos
from ulvideo.models import sampling_flops_per_video
from ulvideo.pipeline import Pipeline
from ulvideo.sample import SamplingConfig, sample_z0

REFERENCE = "ddpm/t/64"
DIGIT_SIZE = RESOLUTION // 2  # MovingDigits draws digits half the canvas wide
METHODS = ("ddpm", "ddim", "heun", "dpmpp-2m")  # euler-ancestral is ddpm's update exactly


def sweep(grids, budgets, to_the_data) -> list[str]:
    # every method and grid at each NFE budget (Heun: the most steps within it)
    out = []
    for method in METHODS:
        for grid in grids:
            for budget in budgets:
                steps = budget
                if method == "heun":
                    steps = (budget + 1) // 2 if to_the_data else budget // 2
                out.append(f"{method}/{grid}/{steps}")
    return out


def parse(setting: str) -> tuple[str, str, int]:
    method, grid, steps = setting.split("/")
    SamplingConfig(method=method, grid=grid)  # clear errors for unknown names
    return method, grid, int(steps)


def parse_e2e(setting: str) -> tuple[str, str, int, str, int]:
    base, decoder = setting.split("+")
    method, grid, base_steps = parse(base)
    which, steps = decoder.split("/")
    if which not in ("teacher", "student"):
        raise ValueError(f"{setting}: the decoder is teacher/STEPS or student/STEPS")
    return method, grid, base_steps, which, int(steps)


def psnr_db(a: torch.Tensor, b: torch.Tensor) -> float:
    # pixels in [-1, 1]: peak-to-peak 2, PSNR of the mean squared error over every clip
    return float(10 * torch.log10(4 / (a - b).square().mean()))


def detail(videos: torch.Tensor) -> float:
    # the mean |discrete Laplacian| over the frames' pixels: the high-frequency content that a
    # few-step sampler's blur removes (PSNR rewards blur: the posterior mean scores best)
    lap = 4 * videos[..., 1:-1, 1:-1] - videos[..., :-2, 1:-1] - videos[..., 2:, 1:-1]
    lap = lap - videos[..., 1:-1, :-2] - videos[..., 1:-1, 2:]
    return float(lap.abs().mean())


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, warmup=0, repeats=1)
    parser.add_argument(
        "--export", required=True, help="the demo's stage-2 export (stage 1's for the decoder)"
    )
    parser.add_argument("--videos", type=int, default=16, help="held-out clips (decoder)")
    parser.add_argument("--base_videos", type=int, default=32, help="samples per base setting")
    parser.add_argument("--cfg_scale", type=float, default=6.0, help="the demo's")
    parser.add_argument(
        "--decoder_settings", nargs="*", help="default: the sweep at 4/8/16 NFE; none: skip"
    )
    parser.add_argument(
        "--base_settings", nargs="*", help="default: the sweep at 4/8/16 NFE; none: skip"
    )
    parser.add_argument("--base_decoder", default=REFERENCE, help="decodes every base setting")
    parser.add_argument("--e2e_settings", nargs="*", default=[], help="whole generations")
    parser.add_argument("--e2e_videos", type=int, default=128, help="samples per e2e setting")
    parser.add_argument("--fvd", action="store_true", help="rFVD / FVD with the real I3D")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    device = setup(args)
    budgets = (4, 8, 16)
    decoder_settings = args.decoder_settings
    if decoder_settings is None:
        decoder_settings = sweep(("t", "logsnr", "karras"), budgets, True) + ["ddpm/t/32"]
    base_settings = args.base_settings
    if base_settings is None:  # the latent schedule is linear: grids t and logsnr coincide
        base_settings = sweep(("t", "karras"), budgets, False) + ["ddpm/t/32"]
    for setting in [REFERENCE, args.base_decoder, *decoder_settings, *base_settings]:
        parse(setting)
    for setting in args.e2e_settings:
        parse_e2e(setting)

    pipeline = Pipeline.from_pretrained(args.export).to(device).eval()
    ul = pipeline.autoencoder
    base = pipeline.require_base() if base_settings else None  # a clear error before any work
    test = build_dataset("demo", None, "test", frames=FRAMES, resolution=RESOLUTION)
    count = max(args.videos, args.base_videos, args.e2e_videos if args.e2e_settings else 0)
    clips = torch.stack([test[i][0] for i in range(count)])
    labels = torch.tensor([test[i][1] for i in range(count)])
    real = clips[: args.videos].to(device)
    i3d = real_features = None
    if args.fvd:
        from ulvideo.evaluate.fvd import fvd_report, protocol_settings, video_features
        from ulvideo.evaluate.i3d import load_i3d

        i3d = load_i3d()
        protocol = protocol_settings(i3d, "tfgan")
        real_features = {
            n: video_features(clips[:n], i3d, "tfgan")
            for n in {args.videos, args.base_videos, args.e2e_videos}
        }

    def fvd(videos: torch.Tensor) -> float | None:
        if i3d is None:
            return None
        features = video_features(videos.cpu(), i3d, "tfgan")
        return float(
            fvd_report(real_features[len(videos)], features, 1, protocol, len(videos))["fvd"]
        )

    ids = list(range(args.videos))
    z0 = ul.noisy_latent(ul.encode(real), StackedRandomGenerator(device, args.seed, ids))

    def decode(z: torch.Tensor, setting: str, first_id: int = 0) -> torch.Tensor:
        method, grid, steps = parse(setting)
        rng = StackedRandomGenerator(device, args.seed + 1, range(first_id, first_id + len(z)))
        return ul.decode(z, steps, method, rng, grid=grid)

    frames, height, width = real.shape[2:]
    report = {
        "benchmark": "sampler_nfe",
        "device": str(device),
        "machine": machine(device),
        "settings": {
            "export": str(args.export),
            "reference": REFERENCE,
            "videos": args.videos,
            "base_videos": args.base_videos,
            "cfg_scale": args.cfg_scale,
            "base_decoder": args.base_decoder,
            "clip": [frames, height, width],
            "fvd_protocol": "tfgan, few videos: noisy" if args.fvd else None,
        },
        "decoder": [],
        "base": [],
        "end_to_end": [],
    }
    reference = None
    decoder_settings = [REFERENCE, *[s for s in decoder_settings if s != REFERENCE]]
    for setting in decoder_settings if len(decoder_settings) > 1 else []:
        method, grid, steps = parse(setting)
        video, seconds = timed(lambda s=setting: decode(z0, s))
        row = {
            "setting": setting,
            "nfe": nfe(method, steps, to_the_data=True),
            "psnr": psnr_db(video, real),
            "detail_ratio": detail(video) / detail(real),
            "class_accuracy": class_accuracy(video.cpu(), labels[: args.videos], DIGIT_SIZE),
            "s_per_video": seconds / len(video),
            "decoder_flops_per_video": sampling_flops_per_video(
                ul.config, frames, height, width, 1, steps, method
            )["decoder_flops"],
            "rfvd": fvd(video),
        }
        if reference is None:
            reference = row
        row["psnr_gap_db"] = reference["psnr"] - row["psnr"]
        if row["rfvd"] is not None:
            row["rfvd_ratio"] = row["rfvd"] / reference["rfvd"]
        report["decoder"].append(row)
        print(row, flush=True)

    y = labels[: args.base_videos].to(device)
    shape = ul.latent_shape(frames, height, width)
    reference_classes = None
    base_settings = [REFERENCE, *[s for s in base_settings if s != REFERENCE]]
    for setting in base_settings if len(base_settings) > 1 else []:
        method, grid, steps = parse(setting)
        sampling = SamplingConfig(
            base_steps=steps, method=method, grid=grid, cfg_scale=args.cfg_scale, seed=args.seed
        )
        rng = StackedRandomGenerator(device, args.seed, range(args.base_videos))
        z, seconds = timed(lambda s=sampling, r=rng: sample_z0(ul, base, shape, s, labels=y, rng=r))
        video = decode(z, args.base_decoder, first_id=10_000)
        classes = classify_videos(video.cpu(), DIGIT_SIZE)
        if reference_classes is None:
            reference_classes = classes
        row = {
            "setting": setting,
            "nfe": nfe(method, steps, to_the_data=False),
            "class_accuracy": float((classes == y.cpu().numpy()).mean()),
            "detail_ratio": detail(video) / detail(clips[: args.base_videos]),
            "same_class_as_reference": float((classes == reference_classes).mean()),
            "base_s_per_video": seconds / len(video),
            "fvd": fvd(video),
        }
        report["base"].append(row)
        print(row, flush=True)
    report["end_to_end"] = end_to_end(pipeline, args, labels, fvd, (frames, height, width))
    report["machine"]["load_average_1_5_15min_at_end"] = machine(device)["load_average_1_5_15min"]
    emit(report, args.out)
    return report


def end_to_end(pipeline, args, labels, fvd, clip) -> list[dict]:
    """Each e2e setting's whole generations, timed side by side, and the first setting again
    under another seed (the noise floor of its FVD)."""
    frames, height, width = clip
    ul, n = pipeline.autoencoder, args.e2e_videos
    y = labels[:n]
    rows = []
    settings = [(s, args.seed) for s in args.e2e_settings]
    if settings:
        settings.append((args.e2e_settings[0], args.seed + 1))
    for setting, seed in settings:
        method, grid, base_steps, which, steps = parse_e2e(setting)
        sampling = SamplingConfig(
            base_steps=base_steps, decoder_steps=steps, method=method, grid=grid,
            cfg_scale=args.cfg_scale, seed=seed, decoder=which, batch_size=16,
        )  # fmt: skip
        video, seconds = timed(
            lambda s=sampling: pipeline.generate(n, frames, (height, width), s, labels=y)
        )
        base_flops = sampling_flops_per_video(
            ul.config, frames, height, width, base_steps, 1, method, args.cfg_scale,
            pipeline.base_config,
        )["base_flops"]  # fmt: skip
        decoder_method = method if which == "teacher" else "ddim"  # students step as DDIM
        decoder_flops = sampling_flops_per_video(
            ul.config, frames, height, width, 0, steps, decoder_method
        )["decoder_flops"]
        row = {
            "setting": setting,
            "seed": seed,
            "flops_per_video": base_flops + decoder_flops,
            "base_flops_per_video": base_flops,
            "decoder_flops_per_video": decoder_flops,
            "s_per_video": seconds / n,
            "class_accuracy": class_accuracy(video.cpu(), y, DIGIT_SIZE),
            "fvd": fvd(video),
        }
        first = rows[0] if rows else row
        row["flops_reduction"] = first["flops_per_video"] / row["flops_per_video"]
        row["wall_time_reduction"] = first["s_per_video"] / row["s_per_video"]
        rows.append(row)
        print(row, flush=True)
    return rows


if __name__ == "__main__":
    main()
