"""Long and large videos: peak memory and time of encode and decode, whole clip against streamed
(encode) / windowed (decode) over frames, and whole frames against tiles over frame sizes. Prints
JSON.

    python benchmarks/bench_long_videos.py --device cpu --threads 1 \\
        --out benchmarks/results/cpu_long_videos.json                 # 17, 65, 257 x 128 px
    python benchmarks/bench_long_videos.py --device cuda --preset small --dtype bf16
    python benchmarks/bench_long_videos.py --frames 5 9 --resolution 32 --sizes 32 64 \\
        --window 5 --tile 32 --steps 1                                  # seconds on a CPU

The decoder's cost grows with its steps but its memory does not, so `--steps` (default 2) only
scales the time. `flat_ratio` is the largest over the smallest streamed/windowed peak memory across
frame counts: the target is <= 1.3 from 17 to 257 frames. The networks are freshly initialised:
memory and time do not depend on the weights.
"""

import argparse
from functools import partial

import torch
from common import add_common_arguments, autocast, emit, machine, measure, setup

from ulvideo.models import autoencoder_preset
from ulvideo.ul import UnifiedLatents


def cost(fn, device: torch.device, args) -> dict:
    """Peak memory (MB) and median seconds of one call."""
    timing = measure(fn, device, args.warmup, args.repeats)
    return {
        "s": round(timing.median_s, 4),
        "peak_memory_mb": timing.peak_memory_mb,
        "step_memory_mb": timing.step_memory_mb,
    }


def run(ul, frames: int, height: int, width: int, windows: dict, device, args) -> dict:
    """Encode and decode one frames x height x width clip, whole and with `windows` (decode's
    window / tile keywords; encode streams over `window` frames when it is given)."""
    video = torch.rand(1, 3, frames, height, width, device=device) * 2 - 1
    z0 = torch.randn(1, *ul.latent_shape(frames, height, width), device=device)
    row = {"frames": frames, "height": height, "width": width, **windows}

    def encode(options: dict):
        with torch.no_grad(), autocast(device, args.dtype):
            ul.encode(video, options.get("window"))

    def decode(options: dict):
        with autocast(device, args.dtype):
            ul.decode(z0, steps=args.steps, **options)

    for name, options in (("whole", {}), ("windowed", windows)):
        row[f"decode_{name}"] = cost(partial(decode, options), device, args)
        if "window" in windows:
            row[f"encode_{name}"] = cost(partial(encode, options), device, args)
    return row


def flat_ratio(rows: list[dict], key: str) -> float | None:
    peaks = [r[key]["step_memory_mb"] for r in rows]
    if None in peaks or min(peaks) <= 0:
        return None
    return round(max(peaks) / min(peaks), 3)


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, warmup=0, repeats=1)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--frames", type=int, nargs="+", default=[17, 65, 257])
    parser.add_argument("--resolution", type=int, default=128, help="frame side over frames")
    parser.add_argument("--window", type=int, default=17, help="1 + 4k frames")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--tile", type=int, default=128, help="pixels")
    parser.add_argument("--tile_frames", type=int, default=17)
    parser.add_argument("--steps", type=int, default=2, help="decoder steps")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    args = parser.parse_args()
    device = setup(args)
    config = autoencoder_preset(args.preset, resolution=args.resolution)
    ul = UnifiedLatents(config).to(device).eval()
    side = args.resolution
    by_frames = [run(ul, f, side, side, {"window": args.window}, device, args) for f in args.frames]
    by_size = [
        run(ul, args.tile_frames, s, s, {"tile": args.tile}, device, args) for s in args.sizes
    ]
    report = {
        "benchmark": "long_videos",
        "device": str(device),
        "machine": machine(device),
        "settings": {
            "preset": args.preset,
            "dtype": args.dtype,
            "decoder_steps": args.steps,
            "window_frames": args.window,
            "tile_pixels": args.tile,
        },
        "by_frames": by_frames,
        "by_size": by_size,
        "flat_ratio": {
            "encode_streamed": flat_ratio(by_frames, "encode_windowed"),
            "decode_windowed": flat_ratio(by_frames, "decode_windowed"),
            "encode_whole": flat_ratio(by_frames, "encode_whole"),
            "decode_whole": flat_ratio(by_frames, "decode_whole"),
        },
    }
    report["machine"]["load_average_1_5_15min_at_end"] = machine(device)["load_average_1_5_15min"]
    emit(report, args.out)
    return report


if __name__ == "__main__":
    main()
