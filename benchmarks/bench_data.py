"""Clip-reading throughput: decord and PyAV ``read_clip`` against a naive decode-everything-then-slice
reader, on 17-frame clips from long videos, plus the Kinetics600 item pipeline. Prints JSON.

    python benchmarks/bench_data.py [--out benchmarks/results/data_cpu.json]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import av
import common
import numpy as np
from skimage import data as skdata

from ulvideo.data import Kinetics600, available_backends, read_clip, write_video


def machine() -> dict:
    return {**common.machine("cpu"), "pyav": av.__version__, "backends": available_backends()}


def real_video(num_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Real texture in motion: a window panning over tiled photographs, with mild sensor noise."""
    canvas = np.tile(skdata.astronaut(), (2, 3, 1))
    noise = np.random.default_rng(seed)
    frames = []
    for t in range(num_frames):
        top, left = (t // 2) % (canvas.shape[0] - height), (2 * t) % (canvas.shape[1] - width)
        window = canvas[top : top + height, left : left + width] + noise.normal(
            0, 3, (height, width, 3)
        )
        frames.append(np.clip(window, 0, 255).astype(np.uint8))
    return np.stack(frames)


def naive_clip(path: Path, start: int, num_frames: int) -> np.ndarray:
    """The baseline: decode every frame of the file with PyAV, then slice."""
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return np.stack(frames[start : start + num_frames])


def clips_per_second(read, starts) -> float:
    """1 / the median time of one read: robust to load from other processes on a shared CPU."""
    read(int(starts[0]))  # warm-up
    seconds = []
    for start in starts:
        began = time.perf_counter()
        read(int(start))
        seconds.append(time.perf_counter() - began)
    return 1.0 / float(np.median(seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--video-frames", type=int, default=300)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--clip-frames", type=int, default=17)
    parser.add_argument("--clips", type=int, default=20, help="clips timed per reader")
    parser.add_argument("--keyframe-intervals", type=int, nargs="+", default=[30, 250])
    args = parser.parse_args()

    frames = real_video(args.video_frames, args.height, args.width)
    starts = np.random.default_rng(0).integers(
        0, args.video_frames - args.clip_frames + 1, args.clips
    )
    result = {
        "benchmark": "data: 17-frame clip reads",
        "machine": machine(),
        "video": {
            "frames": args.video_frames,
            "height": args.height,
            "width": args.width,
            "fps": 30,
            "codec": "libx264 (PyAV defaults, B-frames on)",
        },
        "clip_frames": args.clip_frames,
        "clips_timed": args.clips,
        "rate": "1 / median seconds per clip",
        "by_keyframe_interval": {},
    }
    with tempfile.TemporaryDirectory() as folder:
        for interval in args.keyframe_intervals:
            path = Path(folder) / f"gop{interval}.mp4"
            write_video(path, frames, fps=30, keyframe_interval=interval)
            timing = {"file_mb": round(path.stat().st_size / 2**20, 2)}
            naive = clips_per_second(lambda s, p=path: naive_clip(p, s, args.clip_frames), starts)
            timing["naive_pyav_clips_per_s"] = round(naive, 2)
            for backend in available_backends():
                rate = clips_per_second(
                    lambda s, b=backend, p=path: read_clip(p, s, args.clip_frames, backend=b),
                    starts,
                )
                timing[f"{backend}_clips_per_s"] = round(rate, 2)
                timing[f"{backend}_vs_naive"] = round(rate / naive, 2)
            result["by_keyframe_interval"][str(interval)] = timing

        # The full item pipeline: decode, resize the short side to 128, random crop and flip.
        root = Path(folder) / "k600"
        (root / "train" / "demo").mkdir(parents=True)
        for i in range(4):
            write_video(
                root / "train" / "demo" / f"v{i}.mp4", frames, fps=30, keyframe_interval=250
            )
        dataset = Kinetics600(root, frames=args.clip_frames, resolution=128)
        rate = clips_per_second(lambda i: dataset[i % len(dataset)], np.arange(args.clips))
        result["kinetics600_items_per_s_one_process"] = round(rate, 2)
    common.emit(result, args.out)


if __name__ == "__main__":
    main()
