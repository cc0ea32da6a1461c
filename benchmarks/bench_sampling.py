"""Sampling cost: seconds per video of UL Algorithm 2, the base model from noise to z0 and then the
diffusion decoder to pixels, at given step counts. Prints JSON.

    python benchmarks/bench_sampling.py --device cpu --threads 1 \\
        --out benchmarks/results/cpu_sampling.json
    python benchmarks/bench_sampling.py --device cuda --preset small --dtype bf16 --videos 16

The two halves are `ulvideo.sample.sample_z0` and `UnifiedLatents.decode`, the calls `generate`
makes per batch, timed separately (the decoder on a random z0 of the right shape). The networks are freshly initialised: the cost of a step does
not depend on the weights.
"""

import argparse

import torch
from common import add_common_arguments, autocast, emit, machine, measure, setup

from ulvideo.diffusion import METHODS
from ulvideo.models import autoencoder_preset, base_preset, build_base
from ulvideo.sample import SamplingConfig, sample_z0
from ulvideo.ul import UnifiedLatents

CLIPS = {"tiny": (17, 32)}  # frames, resolution; every other preset: 17 x 128 x 128


def time_steps(ul, base, z0, steps: int, device: torch.device, args) -> dict:
    """Seconds per video of each half at `steps` base and decoder steps."""
    sampling = SamplingConfig(
        base_steps=steps, decoder_steps=steps, method=args.method, batch_size=len(z0)
    )

    def base_half():
        with autocast(device, args.dtype):
            sample_z0(ul, base, z0.shape[1:], sampling)

    def decoder_half():
        with autocast(device, args.dtype):
            ul.decode(z0, steps=steps, method=args.method)

    base_time = measure(base_half, device, args.warmup, args.repeats)
    decoder_time = measure(decoder_half, device, args.warmup, args.repeats)
    base_s, decoder_s = base_time.median_s / len(z0), decoder_time.median_s / len(z0)
    return {
        "base_steps": steps,
        "decoder_steps": steps,
        "base_s_per_video": base_s,
        "decoder_s_per_video": decoder_s,
        "s_per_video": base_s + decoder_s,
        "base_peak_memory_mb": base_time.peak_memory_mb,
        "decoder_peak_memory_mb": decoder_time.peak_memory_mb,
    }


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, warmup=1, repeats=1)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--frames", type=int, help="default: 17")
    parser.add_argument("--resolution", type=int, help="default: 32 for tiny, else 128")
    parser.add_argument("--videos", type=int, default=4, help="videos per batch")
    parser.add_argument("--steps", type=int, nargs="+", default=[16, 64], help="base = decoder")
    parser.add_argument("--method", choices=METHODS, default="ddpm")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    args = parser.parse_args()
    device = setup(args)
    frames, resolution = CLIPS.get(args.preset, (17, 128))
    frames, resolution = args.frames or frames, args.resolution or resolution
    config = autoencoder_preset(args.preset, resolution=resolution)
    ul = UnifiedLatents(config).to(device).eval()
    base_config = base_preset(args.preset, latent_channels=config.latent_channels)
    base = build_base(base_config).to(device).eval()
    latent_shape = ul.latent_shape(frames, resolution, resolution)  # checks the clip size

    report = {
        "benchmark": "sampling",
        "device": str(device),
        "machine": machine(device),
        "settings": {
            "preset": args.preset,
            "frames": frames,
            "resolution": resolution,
            "videos_per_batch": args.videos,
            "method": args.method,
            "dtype": args.dtype,
        },
        "by_steps": [],
    }
    z0 = torch.randn(args.videos, *latent_shape, device=device)  # the decoder's input
    for steps in args.steps:
        report["by_steps"].append(time_steps(ul, base, z0, steps, device, args))
    report["machine"]["load_average_1_5_15min_at_end"] = machine(device)["load_average_1_5_15min"]
    emit(report, args.out)
    return report


if __name__ == "__main__":
    main()
