"""UCF-101 class-conditional generation FVD: the protocol, where it comes from, and its real clips.

Protocol (what this module, its command `ulvideo eval ucf101-real` (`main`) and
`ulvideo.evaluate.fvd` implement):
- Task: generate videos conditioned on one of UCF-101's 101 classes; no real frames are given.
- Frames: FVD over 16 consecutive frames at the videos' native 25 fps (no frame stride). ulvideo
  generates 17 frames (the causal encoder needs 1 + 4k) and `ulvideo.evaluate.fvd` scores the
  first 16.
- Resolution: 128x128, the short side resized and the centre cropped; real clips are not flipped.
- Real set: clips of the **train** split (official split 1, `ucfTrainTestlist/trainlist01.txt`,
  9,537 videos), one per video, from a start drawn per (seed, index); `NUM_SAMPLES` of them, spread
  evenly over the sorted list so every class is present. Without a split file, every video of the
  folder (all 13,320), as the Latte-based scripts below do. Compare numbers only on the same set.
- Generated set [our choice]: as many samples as real clips, with the real clips' labels, so
  both sets have the same class frequencies.
- FVD: `ulvideo.evaluate.fvd` (Kinetics-400 I3D logits averaged over time, float64 Fréchet
  distance).

    ulvideo eval ucf101-real --data_root /data/UCF-101 \
        --split_file /data/ucfTrainTestlist/trainlist01.txt --out ucf101_real.npz
    # sample one video per label of ucf101_real.npz's `labels`, save as .npy, then
    python -m ulvideo.evaluate.fvd --real ucf101_real.npz --fake samples.npy

Sources, checked:
- StyleGAN-V (Skorokhodov et al. 2022; github.com/universome/stylegan-v, `src/metrics/
  metric_main.py` and `frechet_video_distance.py`): its `fvd2048_16f` metric takes 2,048 real and
  2,048 generated clips of 16 consecutive frames (`subsample_factor=1`), no x-flip, videos shorter
  than a clip discarded, real clips from the given dataset at a random offset, and the TF-Hub I3D
  (a torchscript port) features before the softmax.
- Latte-based code scores UCF-101 with that metric: github.com/jjihwan/Latte-FIFO-UCF101,
  `tools/eval_fvd2048_16f.sh`, runs StyleGAN-V's `calc_metrics_for_dataset.py --metrics
  fvd2048_16f` with frames extracted from the whole `UCF-101` folder (`tools/preprocess_ucf.sh`)
  as the real set, while its `eval_fvd2048_128f.sh` uses test-split frames: practice varies.
- MAGVIT (Yu et al. 2023): its project page (magvit.cs.cmu.edu/pages/benchmarks) trains on the
  9.5K training videos of UCF-101; Papers with Code lists its class-conditional result as 128x128,
  "FVD16 76±2" (16 frames, mean ± std). For MAGVIT's resize of 128 px videos (through 64x64)
  score with `--protocol magvit-k600` of `ulvideo.evaluate.fvd` (see that module).

Not verified here (from memory of the papers, not from a source read for this module): that
MAGVIT and TATS score 10,000 generated videos against clips of the train split; which real set the
Latte and StyleGAN-V papers' own UCF-101 numbers used; and how StyleGAN-V picks its 2,048 real clips
among the videos (we spread them evenly). Report the sample count with any number,
and use 10,000 (`--num 10000`) to compare with MAGVIT-style tables.
"""

import argparse
import json
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from .fvd import NUM_FRAMES

NUM_SAMPLES = 2048  # StyleGAN-V's fvd2048_16f
RESOLUTION = 128


def evenly_spread(count: int, total: int) -> np.ndarray:
    """``count`` indices spread evenly over ``range(total)``, first and last included."""
    if not 1 <= count <= total:
        raise ValueError(f"cannot take {count} clips from a real set of {total} videos")
    return np.linspace(0, total - 1, count).round().astype(int)


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


def write_real_clips(dataset: Dataset, num: int, out: str | Path) -> dict:
    """Save ``num`` evenly spread clips of ``dataset`` to an ``.npz`` of uint8 ``videos``
    (N x T x H x W x 3, as `ulvideo.evaluate.fvd` reads them) and their ``labels``; a summary."""
    indices = evenly_spread(num, len(dataset))
    videos, labels = [], []
    for index in indices:
        video, label = dataset[int(index)]
        frames = ((video.permute(1, 2, 3, 0) + 1) * 127.5).round().clamp(0, 255)
        videos.append(frames.byte().numpy())
        labels.append(int(label))
    np.savez(out, videos=np.stack(videos), labels=np.array(labels))
    return {"out": str(out), "clips": len(indices), "classes": len(set(labels))}


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
