"""Images as one-frame videos, from a folder in the ImageNet layout (``root/train/<class>/*.JPEG``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .bad_files import BadFiles, FileDataset
from .folders import class_folder_files
from .transforms import clip_transform, random_flip, to_video_tensor

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp")


def adm_center_crop(image: Image.Image, size: int) -> np.ndarray:
    """ADM's centre crop (Dhariwal & Nichol 2021): halve with a box filter while the short side is at
    least 2 * size, resize the short side to size (bicubic), crop the centre. uint8 ``(size, size, 3)``."""
    image = image.convert("RGB")
    while min(image.size) >= 2 * size:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
    scale = size / min(image.size)
    image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
    left, top = (image.width - size) // 2, (image.height - size) // 2
    return np.array(image.crop((left, top, left + size, top + size)))


class ImageFolder(FileDataset):
    """Images as ``(video, label)``: float32 ``3 x 1 x resolution x resolution`` in [-1, 1] (an ADM
    centre crop, flipped left-right with probability 1/2 when training) and the class index.

    Layout: ``root/<split>/<class>/<image>``; images directly in ``root/<split>`` get label -1.
    Unreadable images are skipped with a warning; more than ``max_bad_fraction`` raises.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        resolution: int = 512,
        train: bool | None = None,
        seed: int = 0,
        max_bad_fraction: float = 0.01,
    ):
        if resolution < 1:
            raise ValueError(f"resolution must be >= 1, got {resolution}")
        self.root = Path(root)
        layout = f"Expected the ImageNet layout {self.root}/{split}/<class name>/*.JPEG."
        if not (self.root / split).is_dir():
            raise FileNotFoundError(f"image folder {self.root / split} does not exist. {layout}")
        files, self.classes = class_folder_files(self.root, split, IMAGE_EXTENSIONS)
        if not files:
            raise FileNotFoundError(f"no images found under {self.root / split}. {layout}")
        self.paths = [str(self.root / relative) for relative, _ in files]
        self.labels = [label for _, label in files]
        self.split, self.resolution, self.seed, self.epoch = split, resolution, seed, 0
        self.train = split == "train" if train is None else train
        self._bad = BadFiles(len(files), max_bad_fraction, "image")

    def _load(self, index: int, rng: np.random.Generator) -> tuple[torch.Tensor, int]:
        with Image.open(self.paths[index]) as image:  # OSError: missing, unidentified, truncated
            video = to_video_tensor(adm_center_crop(image, self.resolution)[None])
        return (random_flip(video, rng) if self.train else video), self.labels[index]

    def shapes(self) -> np.ndarray:
        """``(N, 3)``: (1, height, width) of each image, from its header; (1, 0, 0) for an
        unreadable one, which fills no bucket."""
        rows = []
        for path in self.paths:
            try:
                with Image.open(path) as image:
                    rows.append((1, image.height, image.width))
            except OSError as error:
                self._bad.add(path, str(error))
                rows.append((1, 0, 0))
        return np.array(rows, dtype=np.int64).reshape(-1, 3)

    def load_shaped(self, index: int, shape, rng: np.random.Generator):
        """Image ``index`` resized to cover ``shape`` (1, height, width) keeping its aspect ratio,
        centre-cropped (ADM) and flipped when training; raises OSError for a bad file."""
        _, height, width = shape
        with Image.open(self.paths[index]) as image:
            frames = np.array(image.convert("RGB"))[None]
        video = clip_transform(frames, (height, width), rng, crop="center", flip=self.train)
        return video, self.labels[index]
