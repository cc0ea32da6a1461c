"""The prior's attention modes, factorised against full spatiotemporal attention, as the number
of latent frames grows: time, memory and FLOPs of one training step, and the fitted exponent k
in cost ~ frames^k. Prints JSON.

    python benchmarks/bench_attention_modes.py --device cpu --threads 1 \\
        --out benchmarks/results/cpu_attention_modes.json

The prior is a VideoTransformer of --width and --depth on a --grid x --grid latent grid per frame;
a step is its UL prior loss (unweighted ELBO) forward, backward and AdamW. Factorised attention
costs ~ T x (S^2 + S) and full ~ (T S)^2 for T frames of S tokens, so k is near 1 for factorised
and tends to 2 for full as attention dominates the linear layers.
"""

import argparse

import torch
from common import (
    MEMORY_NOTE,
    add_common_arguments,
    autocast,
    emit,
    loglog_slope,
    machine,
    measure,
    setup,
)

from ulvideo.diffusion import LinearLogSNR, prior_elbo
from ulvideo.models import autoencoder_preset, build_prior, training_flops_per_example


def prior_config(mode: str, args):
    """The tiny preset's latent sizes with a prior of the requested width, depth and mode."""
    return autoencoder_preset(
        "tiny",
        prior_widths=(args.width,),
        prior_depths=(args.depth,),
        head_dim=args.head_dim,
        attention=mode,
    )


def step_cost(mode: str, frames: int, device: torch.device, args) -> dict:
    """Time, memory and counted FLOPs of one prior training step on `frames` latent frames."""
    config = prior_config(mode, args)
    prior = build_prior(config).to(device)
    schedule = LinearLogSNR(config.logsnr_latent, config.logsnr_min_latent)
    z = torch.randn(args.batch_size, config.latent_channels, frames, args.grid, args.grid)
    z = z.to(device)
    optimizer = torch.optim.AdamW(prior.parameters(), lr=1e-4)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, args.dtype):
            loss = prior_elbo(prior, z, schedule).mean()
        loss.backward()
        optimizer.step()

    timing = measure(step, device, args.warmup, args.repeats)
    pixel_frames = 1 + (frames - 1) * config.temporal_downsample
    side = args.grid * config.spatial_downsample
    flops = training_flops_per_example(config, "prior", pixel_frames, side, side)
    return {
        "frames": frames,
        "tokens": frames * args.grid**2,
        "step_s": timing.to_dict(),
        "training_flops": flops * args.batch_size,
    }


def exponents(rows: list[dict]) -> dict:
    """Fitted k in cost ~ frames^k over all frame counts and over the largest three."""
    frames = [r["frames"] for r in rows]
    series = {
        "time": [r["step_s"]["median_s"] for r in rows],
        "flops": [r["training_flops"] for r in rows],
        "step_memory": [r["step_s"]["step_memory_mb"] for r in rows],
    }
    fits = {}
    for name, values in series.items():
        if None in values or min(values) <= 0:
            continue
        fits[name] = round(loglog_slope(frames, values), 3)
        if len(frames) > 3:
            fits[f"{name}_largest_3"] = round(loglog_slope(frames[-3:], values[-3:]), 3)
    return fits


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, warmup=1, repeats=3)
    parser.add_argument("--frames", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--modes", nargs="+", choices=["factorised", "full"])
    parser.add_argument("--grid", type=int, default=16, help="latent tokens per side per frame")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--head_dim", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    args = parser.parse_args()
    args.modes = args.modes or ["factorised", "full"]
    device = setup(args)
    if len(args.frames) < 2 or min(args.frames) < 1:
        raise SystemExit("--frames needs at least two counts >= 1 to fit an exponent")
    for mode in args.modes:
        prior_config(mode, args)  # invalid sizes fail here, before any work

    report = {
        "benchmark": "attention_modes",
        "device": str(device),
        "machine": machine(device),
        "settings": {
            k: getattr(args, k)
            for k in ("grid", "width", "depth", "head_dim", "batch_size", "dtype", "frames")
        },
        "step": "prior_elbo forward under autocast, backward, AdamW",
        "exponent": "least-squares slope of log(cost) against log(frames)",
        "memory": MEMORY_NOTE,
        "modes": {},
    }
    for mode in args.modes:
        rows = [step_cost(mode, t, device, args) for t in sorted(args.frames)]
        report["modes"][mode] = {"by_frames": rows, "exponents": exponents(rows)}
    report["machine"]["load_average_1_5_15min_at_end"] = machine(device)["load_average_1_5_15min"]
    emit(report, args.out)
    return report


if __name__ == "__main__":
    main()
