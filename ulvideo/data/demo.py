"""Built-in demo data: real handwritten digits (scikit-learn's bundled copy of the UCI digits)
bouncing on a black canvas. No download; deterministic given a seed."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch.utils.data import Dataset

from .transforms import random_crop, resize_short_side

DEMO_SPLITS = {"train": 0, "test": 1}
DEFAULT_SIZES = {"train": 2000, "test": 200}
TEST_EVERY = 6  # digit images 0, 6, 12, ... form the test split; the others the train split


@lru_cache(maxsize=8)
def digit_images(split: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The split's 8x8 digit images upsampled (bilinear) to ``size x size`` in [0, 1], and labels."""
    digits = load_digits()
    in_test = np.arange(len(digits.target)) % TEST_EVERY == 0
    keep = in_test if split == "test" else ~in_test
    images = torch.from_numpy(digits.images[keep] / 16.0).float()[:, None]
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return images[:, 0].clamp(0, 1).numpy(), digits.target[keep]


def bounce(start: np.ndarray, velocity: np.ndarray, steps: np.ndarray, limit: int) -> np.ndarray:
    """Positions in [0, limit] of points moving at constant velocity and reflecting off both ends:
    a triangle wave of period 2 * limit. start, velocity ``(..., D)`` -> ``(..., len(steps), D)``."""
    unfolded = start[..., None, :] + velocity[..., None, :] * steps[:, None]
    folded = np.mod(unfolded, 2 * limit)
    return np.where(folded > limit, 2 * limit - folded, folded)


class MovingDigits(Dataset):
    """Bouncing handwritten digits as ``(video, label)``: float32 ``3 x frames x resolution x
    resolution`` in [-1, 1] (grey, background -1) and the first digit's value (0-9).

    Digits are half the canvas wide. Train and test use disjoint digit images. Item ``i`` depends
    on (seed, split, i) only.
    """

    num_classes = 10
    classes = [str(d) for d in range(10)]

    def __init__(
        self,
        split: str = "train",
        frames: int = 17,
        resolution: int = 32,
        size: int | None = None,
        seed: int = 0,
        digits_per_video: int = 1,
    ):
        if split not in DEMO_SPLITS:
            raise ValueError(f"unknown demo split {split!r}: use one of {tuple(DEMO_SPLITS)}")
        if frames < 1 or resolution < 16 or digits_per_video < 1 or (size is not None and size < 1):
            raise ValueError(
                "need frames >= 1, resolution >= 16, digits_per_video >= 1 and size >= 1, got "
                f"{frames}, {resolution}, {digits_per_video}, {size}"
            )
        self.split, self.frames, self.resolution, self.seed = split, frames, resolution, seed
        self.size = DEFAULT_SIZES[split] if size is None else size
        self.digits_per_video = digits_per_video
        self.digit_size = resolution // 2
        self.images, self.labels = digit_images(split, self.digit_size)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} demo videos")
        rng = np.random.default_rng((self.seed, DEMO_SPLITS[self.split], index))
        count, side, limit = (
            self.digits_per_video,
            self.digit_size,
            self.resolution - self.digit_size,
        )
        chosen = rng.integers(0, len(self.images), count)
        angle = rng.uniform(0, 2 * np.pi, count)
        speed = rng.uniform(0.5, 1.5, count) * self.resolution / 16  # pixels per frame
        velocity = speed[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
        start = rng.uniform(0, limit, (count, 2))
        corners = np.rint(bounce(start, velocity, np.arange(self.frames), limit)).astype(int)
        canvas = np.zeros((self.frames, self.resolution, self.resolution), np.float32)
        offsets = np.arange(side)
        time = np.arange(self.frames)[:, None, None]
        for digit, corner in zip(chosen, corners):  # corner: (frames, 2) as (row, column)
            rows = corner[:, 0, None, None] + offsets[None, :, None]
            cols = corner[:, 1, None, None] + offsets[None, None, :]
            canvas[time, rows, cols] = np.maximum(canvas[time, rows, cols], self.images[digit])
        video = torch.from_numpy(canvas * 2 - 1)[None].repeat(3, 1, 1, 1)
        return video, int(self.labels[chosen[0]])

    def shapes(self) -> np.ndarray:
        """``(N, 3)``: every clip is (frames, resolution, resolution)."""
        return np.tile([self.frames, self.resolution, self.resolution], (self.size, 1))

    def load_shaped(self, index: int, shape, rng: np.random.Generator):
        """Clip ``index`` cut at ``shape`` (frames, height, width): a random run of frames, resized
        to cover height x width keeping the aspect ratio, and a random window of it."""
        frames, height, width = shape
        video, label = self[index]
        start = int(rng.integers(0, self.frames - frames + 1))
        clip = video[:, start : start + frames].transpose(0, 1)  # T x 3 x H x W
        window = random_crop(resize_short_side(clip, (height, width)), (height, width), rng)
        return window.transpose(0, 1).contiguous(), label
