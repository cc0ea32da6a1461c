"""Frame transforms: uint8 frames to the project's float video tensors, resize, crop and flip."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """Randomness of one sample: a function of (seed, epoch, index) only, so workers and ranks agree."""
    return np.random.default_rng((seed, epoch, index))


def to_video_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``(T, H, W, 3)`` frames to a float32 ``C x T x H x W`` video in [-1, 1]."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(
            f"expected uint8 frames of shape (T, H, W, 3), got {frames.dtype} {frames.shape}"
        )
    video = torch.from_numpy(frames.astype(np.float32)).permute(3, 0, 1, 2)
    return video / 127.5 - 1.0


def resize_short_side(video: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a ``C x T x H x W`` video so that min(H, W) == size, keeping the aspect ratio (antialiased)."""
    height, width = video.shape[-2:]
    scale = size / min(height, width)
    new_size = (max(size, round(height * scale)), max(size, round(width * scale)))
    if new_size == (height, width):
        return video
    frames = video.transpose(0, 1)  # T x C x H x W: time as the batch
    frames = F.interpolate(
        frames, size=new_size, mode="bilinear", antialias=True, align_corners=False
    )
    return frames.transpose(0, 1).clamp(-1.0, 1.0)


def crop(video: torch.Tensor, top: int, left: int, size: int) -> torch.Tensor:
    """The ``size x size`` window of a ``... x H x W`` video whose top-left corner is (top, left)."""
    return video[..., top : top + size, left : left + size]


def center_crop(video: torch.Tensor, size: int) -> torch.Tensor:
    """The centred ``size x size`` window."""
    height, width = video.shape[-2:]
    return crop(video, (height - size) // 2, (width - size) // 2, size)


def random_crop_flip(video: torch.Tensor, size: int, rng: np.random.Generator) -> torch.Tensor:
    """A uniformly placed ``size x size`` window, mirrored left-right with probability 1/2."""
    height, width = video.shape[-2:]
    top = int(rng.integers(0, height - size + 1))
    left = int(rng.integers(0, width - size + 1))
    video = crop(video, top, left, size)
    return video.flip(-1) if rng.random() < 0.5 else video


def clip_transform(
    frames: np.ndarray, resolution: int, train: bool, rng: np.random.Generator
) -> torch.Tensor:
    """Frames to a square ``3 x T x resolution x resolution`` video: shorter side resized, then a
    centre crop (evaluation) or a random crop and flip (training)."""
    video = resize_short_side(to_video_tensor(frames), resolution)
    return random_crop_flip(video, resolution, rng) if train else center_crop(video, resolution)
