"""Frame transforms: resize, crop and flip uint8 frames, then make the project's float videos.

Frames are uint8 ``T x 3 x H x W`` tensors (a view of decoded ``(T, H, W, 3)`` arrays): resizing
uint8 channels-last data is over 10x faster on CPU than float, so conversion to float comes last.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..geometry import frame_size


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """Randomness of one sample: a function of (seed, epoch, index) only, so workers and ranks agree."""
    return np.random.default_rng((seed, epoch, index))


def as_frames(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``(T, H, W, 3)`` array to a uint8 ``T x 3 x H x W`` tensor (a channels-last view)."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(
            f"expected uint8 frames of shape (T, H, W, 3), got {frames.dtype} {frames.shape}"
        )
    return torch.from_numpy(frames).permute(0, 3, 1, 2)


def to_video(frames: torch.Tensor) -> torch.Tensor:
    """uint8 ``T x 3 x H x W`` frames to a float32 ``3 x T x H x W`` video in [-1, 1]."""
    # NumPy converts strided uint8 views several times faster than torch on CPU.
    video = np.ascontiguousarray(frames.permute(1, 0, 2, 3).numpy()).astype(np.float32)
    video /= 127.5
    video -= 1.0
    return torch.from_numpy(video)


def to_video_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``(T, H, W, 3)`` array to a float32 ``3 x T x H x W`` video in [-1, 1]."""
    return to_video(as_frames(frames))


def resize_short_side(frames: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Resize ``N x C x H x W`` images, keeping the aspect ratio, to the smallest size that covers
    ``size`` (a side, or height x width): for a square size, min(H, W) == size (antialiased
    bilinear; uint8 or float)."""
    height, width = frames.shape[-2:]
    out_h, out_w = frame_size(size)
    scale = max(out_h / height, out_w / width)
    new_size = (max(out_h, round(height * scale)), max(out_w, round(width * scale)))
    if new_size == (height, width):
        return frames
    return F.interpolate(
        frames, size=new_size, mode="bilinear", antialias=True, align_corners=False
    )


def crop(frames: torch.Tensor, top: int, left: int, size: int | tuple[int, int]) -> torch.Tensor:
    """The ``size`` (a side, or height x width) window of ``... x H x W`` frames whose top-left
    corner is (top, left)."""
    height, width = frame_size(size)
    return frames[..., top : top + height, left : left + width]


def center_crop(frames: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """The centred ``size`` (a side, or height x width) window."""
    (height, width), (out_h, out_w) = frames.shape[-2:], frame_size(size)
    return crop(frames, (height - out_h) // 2, (width - out_w) // 2, size)


def random_crop(
    frames: torch.Tensor, size: int | tuple[int, int], rng: np.random.Generator
) -> torch.Tensor:
    """A uniformly placed ``size`` (a side, or height x width) window."""
    (height, width), (out_h, out_w) = frames.shape[-2:], frame_size(size)
    top = int(rng.integers(0, height - out_h + 1))
    left = int(rng.integers(0, width - out_w + 1))
    return crop(frames, top, left, size)


def random_flip(frames: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """The frames mirrored left-right with probability 1/2."""
    return frames.flip(-1) if rng.random() < 0.5 else frames


CROPS = ("random", "center")


def clip_transform(
    frames: np.ndarray,
    resolution: int | tuple[int, int],
    rng: np.random.Generator | None = None,
    crop: str = "center",
    flip: bool = False,
) -> torch.Tensor:
    """uint8 ``(T, H, W, 3)`` frames to a float32 ``3 x T x height x width`` video in [-1, 1],
    ``resolution`` a side (square) or (height, width): resized, keeping the aspect ratio, to cover
    height x width (the short side for a square), then a ``crop`` ("center" or "random") window,
    mirrored with probability 1/2 if ``flip``. Random choices (which need ``rng``) are drawn in the
    order crop, flip."""
    if crop not in CROPS:
        raise ValueError(f"unknown crop {crop!r}: use one of {CROPS}")
    resized = resize_short_side(as_frames(frames), resolution)
    square = (
        random_crop(resized, resolution, rng)
        if crop == "random"
        else center_crop(resized, resolution)
    )
    return to_video(random_flip(square, rng) if flip else square)
