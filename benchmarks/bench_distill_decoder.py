"""The distilled few-step decoder against the stage-1 decoder on held-out demo clips: students
of `ulvideo distill` at 1, 2 and 4 steps and the teacher (the 64-step ancestral reference, and
at the same few steps), scored by PSNR and rFVD, with the wall time per decoded video of each
measured side by side in one run. Prints JSON.

    python benchmarks/bench_distill_decoder.py --stage1 /work/demo_ref/out/stage1/final \\
        --work /tmp/distill_bench --threads 1 --out benchmarks/results/distill_decoder_cpu.json

The stage-1 export is copied into --work and distilled there (rounds 32 -> 4 -> 2 -> 1, each
saved under --work/rounds; a rerun reuses finished rounds). The issue's target for the decoder:
at <= 4 NFE, rFVD within 10% and PSNR within 0.5 dB of the 64-step ancestral reference. The
rFVD of a second draw of the reference (another seed) is the noise floor of that comparison.
"""

import argparse
import json
import shutil
from functools import partial
from pathlib import Path

import torch
from common import add_common_arguments, emit, machine, measure, setup

from ulvideo.data import build_dataset
from ulvideo.diffusion import StackedRandomGenerator
from ulvideo.evaluate.fvd import fvd_report, protocol_settings, video_features
from ulvideo.evaluate.i3d import load_i3d
from ulvideo.evaluate.psnr_ssim import psnr
from ulvideo.pipeline import AUTOENCODER, Pipeline
from ulvideo.train.distill import DistillConfig, distill

FRAMES, PROTOCOL = 17, "tfgan"


def timed(decode, rng, args):
    """The last video of `decode(rng=rng())` (each call with the same seeds) and its timing."""
    videos = []
    timing = measure(
        lambda: videos.append(decode(rng=rng())), args.device, args.warmup, args.repeats
    )
    return videos[-1], timing


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, warmup=0, repeats=1)
    parser.add_argument("--stage1", type=Path, required=True, help="the demo's stage-1 export")
    parser.add_argument("--work", type=Path, required=True, help="a folder for the copy")
    parser.add_argument("--videos", type=int, default=24, help="held-out demo test clips")
    parser.add_argument("--iterations", type=int, default=300, help="per distillation round")
    parser.add_argument("--teacher_steps", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=DistillConfig.lr)
    parser.add_argument("--reference_steps", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--note", default="", help="recorded in the settings: where --stage1 came from"
    )
    args = parser.parse_args()
    device = args.device = setup(args)
    export = args.work / "export"
    if not (export / AUTOENCODER).is_dir():
        shutil.copytree(args.stage1 / AUTOENCODER, export / AUTOENCODER)
    config = DistillConfig(
        str(export), steps=1, start_steps=4, teacher_steps=args.teacher_steps,
        iterations=args.iterations, data="demo", frames=5, batch_size=args.batch_size,
        lr=args.lr, seed=args.seed, output_dir=str(args.work / "rounds"),
    )  # fmt: skip
    students = distill(config)["students"]
    rounds = [json.loads(line) for line in (args.work / "rounds" / "log.jsonl").open()]

    ul = Pipeline.from_pretrained(export).to(device).autoencoder
    test = build_dataset("demo", None, "test", frames=FRAMES, resolution=ul.config.resolution)
    real = torch.stack([test[i][0] for i in range(args.videos)]).to(device)
    ids = range(args.videos)
    with torch.no_grad():
        z0 = ul.noisy_latent(ul.encode(real), StackedRandomGenerator(device, args.seed, ids))
    i3d = load_i3d().to(device)
    real_features = video_features(real, i3d, PROTOCOL)

    ref = args.reference_steps
    runs = [  # (name, decoder steps, method, student steps or None, seed)
        (f"teacher_ddpm_{ref}", ref, "ddpm", None, args.seed),
        (f"teacher_ddpm_{ref}_seed{args.seed + 1}", ref, "ddpm", None, args.seed + 1),
        (f"teacher_ddim_{args.teacher_steps}", args.teacher_steps, "ddim", None, args.seed),
        *[(f"teacher_ddpm_{n}", n, "ddpm", None, args.seed) for n in (4, 1)],
        *[(f"student{s}_{n}", n, "ddim", s, args.seed) for s, n in ((4, 4), (4, 2), (2, 2), (1, 1))],
    ]  # fmt: skip
    results = {}
    for name, steps, method, student, seed in runs:
        decode = partial(ul.decode, z0, steps, method, student=students.get(student))
        video, timing = timed(decode, partial(StackedRandomGenerator, device, seed, ids), args)
        fvd = fvd_report(real_features, video_features(video, i3d, PROTOCOL), 1, {}, len(video))
        results[name] = {
            "decoder": "teacher" if student is None else f"student ({student} steps)",
            "nfe": steps,
            "method": method,
            "psnr": float(psnr(video, real).mean()),
            "rfvd": fvd["fvd"],
            "s_per_video": timing.median_s / args.videos,
        }
        print(name, json.dumps(results[name]), flush=True)

    reference = results[f"teacher_ddpm_{ref}"]
    for entry in results.values():
        entry["psnr_gap_db"] = reference["psnr"] - entry["psnr"]
        entry["rfvd_ratio"] = entry["rfvd"] / reference["rfvd"]
        entry["meets_target"] = entry["psnr_gap_db"] <= 0.5 and entry["rfvd_ratio"] <= 1.1
        entry["speedup"] = reference["s_per_video"] / entry["s_per_video"]
    report = {
        "benchmark": "distill_decoder",
        "device": str(device),
        "machine": machine(device),
        "settings": {
            "stage1_export": str(args.stage1),
            "stage1_note": args.note,
            "method": "progressive distillation (ulvideo.train.distill)",
            "rounds": rounds,
            "distill_config": {
                k: v for k, v in vars(config).items() if k not in ("checkpoint", "output_dir")
            },
            "held_out": f"{args.videos} demo test clips, {FRAMES} x 32 x 32",
            "rfvd_protocol": protocol_settings(i3d, PROTOCOL),
            "reference": f"teacher_ddpm_{ref}",
            "target": "<= 4 NFE: rFVD within 10% and PSNR within 0.5 dB of the reference",
            "note": "psnr: mean over videos of the per-frame PSNR to the real clip; one rFVD "
            f"group of {args.videos} clips (far too few for absolute numbers: compare against "
            "the reference's second seed, the noise floor)",
        },
        "results": results,
    }
    emit(report, args.out)
    return report


if __name__ == "__main__":
    main()
