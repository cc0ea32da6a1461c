"""`ulvideo eval ucf101-real`: the real clips of the UCF-101 FVD protocol (evaluation.ucf101)."""

import argparse
import json
from pathlib import Path

from torch.utils.data import Dataset

from evaluation.fvd import NUM_FRAMES
from evaluation.ucf101 import NUM_SAMPLES, RESOLUTION, write_real_clips


def ucf101_real_clips(
    root: str | Path,
    split_file: str | Path | None,
    frames: int = NUM_FRAMES,
    resolution: int = RESOLUTION,
    seed: int = 0,
) -> Dataset:
    """The protocol's real clips of a UCF-101 split list (``trainlist01.txt``; None: every video of
    ``root``), as (video, label):
    ``frames`` consecutive frames from a start drawn per (seed, index), the short side resized to
    ``resolution`` and centre-cropped, not flipped."""
    from ..data import VideoFolder

    return VideoFolder(
        root,
        "train",
        frames,
        resolution,
        split_file=split_file,
        temporal_crop="random",
        spatial_crop="center",
        flip=False,
        seed=seed,
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="ulvideo eval ucf101-real", description="write the UCF-101 FVD protocol's real clips"
    )
    parser.add_argument("--data_root", required=True, help="the UCF-101 folder of class folders")
    parser.add_argument(
        "--split_file", default=None, help="ucfTrainTestlist/trainlist01.txt; none: every video"
    )
    parser.add_argument("--num", type=int, default=NUM_SAMPLES, help="real clips (10000: MAGVIT)")
    parser.add_argument("--resolution", type=int, default=RESOLUTION)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="ucf101_real.npz")
    args = parser.parse_args(argv)
    dataset = ucf101_real_clips(
        args.data_root, args.split_file, resolution=args.resolution, seed=args.seed
    )
    summary = write_real_clips(dataset, args.num, args.out)
    print(json.dumps(summary))
    return summary
