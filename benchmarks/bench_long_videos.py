"""Long and large videos: peak memory and time of encode and decode, whole clip against streamed
(encode) / windowed (decode) over frames, and whole frames against tiles over frame sizes. Prints
JSON.

    python benchmarks/bench_long_videos.py --device cpu --threads 1 --steps 1 \\
        --out benchmarks/results/cpu_long_videos.json                 # 17, 65, 257 x 128 px
    python benchmarks/bench_long_videos.py --device cuda --preset small --dtype bf16
    python benchmarks/bench_long_videos.py --frames 5 9 --resolution 32 --sizes 32 64 \\
        --window 5 --tile 32 --steps 1                                  # seconds on a CPU

Each measurement runs in a fresh process (forked on a CPU), so no allocator history carries from
one to the next; on a CPU with glibc's mmap threshold at 64 KiB, so that freed tensors leave the
resident set at once and its peak tracks the live tensors. The decoder's cost grows with
its steps but its memory does not, so `--steps` (default 2) only scales the time. The output
video grows with the clip whatever the method, so `working_memory_mb` is the step memory less the
output tensor (the input is made before the measurement), and `flat_ratio` is the largest over the
smallest working memory across frame counts: the target is <= 1.3 from 17 to 257 frames. A
measurement over `--case_timeout` seconds is recorded as skipped. The networks are freshly
initialised: memory and time do not depend on the weights.
"""

import argparse
import ctypes
import multiprocessing
import sys

import torch
from common import add_common_arguments, autocast, emit, machine, measure, setup

from ulvideo.models import autoencoder_preset
from ulvideo.ul import UnifiedLatents

M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def measure_case(args, case: dict) -> dict:
    """One encode or decode of one clip, in this process: seconds, peak and working memory."""
    device = setup(args)
    torch.manual_seed(0)
    config = autoencoder_preset(args.preset, resolution=args.resolution)
    ul = UnifiedLatents(config).to(device).eval()
    frames, height, width = case["frames"], case["height"], case["width"]
    video = torch.rand(1, 3, frames, height, width, device=device) * 2 - 1
    z0 = torch.randn(1, *ul.latent_shape(frames, height, width), device=device)
    options = case["options"]

    def run():
        with torch.no_grad(), autocast(device, args.dtype):
            if case["op"] == "encode":
                return ul.encode(video, options.get("window"))
            return ul.decode(z0, steps=args.steps, **options)

    out_mb = (z0 if case["op"] == "encode" else video).numel() * 4 / 2**20
    timing = measure(run, device, args.warmup, args.repeats)
    step = timing.step_memory_mb
    return {
        "s": round(timing.median_s, 4),
        "peak_memory_mb": timing.peak_memory_mb,
        "step_memory_mb": step,
        "output_mb": round(out_mb, 3),
        "working_memory_mb": None if step is None else round(step - out_mb, 1),
    }


def _child(args, case: dict, conn) -> None:
    conn.send(measure_case(args, case))


def in_fresh_process(args, case: dict) -> dict:
    """measure_case in a child process (forked on a CPU: no re-import), or skipped with why."""
    ctx = multiprocessing.get_context("fork" if args.device == "cpu" else "spawn")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child, args=(args, case, send))
    child.start()
    send.close()
    if not receive.poll(args.case_timeout):
        child.kill()
        child.join()
        return {"skipped": f"over --case_timeout {args.case_timeout} s"}
    try:
        result = receive.recv()
    except EOFError:  # the child died (out of memory, ...)
        child.join()
        return {"skipped": f"the measuring process exited with {child.exitcode}"}
    child.join()
    return result


def run(args, frames: int, height: int, width: int, windows: dict) -> dict:
    """Encode and decode one frames x height x width clip, whole and with `windows` (decode's
    window / tile keywords; encode streams over `window` frames when it is given)."""
    row = {"frames": frames, "height": height, "width": width, **windows}
    for name, options in (("whole", {}), ("windowed", windows)):
        ops = ("decode", "encode") if "window" in windows else ("decode",)
        for op in ops:
            case = {"op": op, "frames": frames, "height": height, "width": width}
            row[f"{op}_{name}"] = in_fresh_process(args, {**case, "options": options})
            print(f"{op} {name} {frames}x{height}x{width}: {row[f'{op}_{name}']}", file=sys.stderr)
    return row


def flat_ratio(rows: list[dict], key: str) -> float | None:
    peaks = [r[key].get("working_memory_mb") for r in rows]
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
    parser.add_argument("--case_timeout", type=float, default=1200, help="seconds per measurement")
    args = parser.parse_args()
    device = setup(args)
    if device.type == "cpu":  # freed tensors leave the resident set at once (glibc)
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 65536)
    side = args.resolution
    by_frames = [run(args, f, side, side, {"window": args.window}) for f in args.frames]
    by_size = [run(args, args.tile_frames, s, s, {"tile": args.tile}) for s in args.sizes]
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
            "memory": "step_memory_mb: peak resident set (CUDA: allocated) during the call less "
            "what was resident before it; working_memory_mb: that less the output tensor "
            "(the decoded video, or the latent); each measurement in a fresh process"
            + (", glibc mmap threshold 64 KiB" if device.type == "cpu" else ""),
        },
        "by_frames": by_frames,
        "by_size": by_size,
        "flat_ratio": {
            key: flat_ratio(by_frames, key)
            for key in ("encode_windowed", "decode_windowed", "encode_whole", "decode_whole")
        },
    }
    report["machine"]["load_average_1_5_15min_at_end"] = machine(device)["load_average_1_5_15min"]
    emit(report, args.out)
    return report


if __name__ == "__main__":
    main()
