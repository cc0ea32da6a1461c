"""Build a dataset by name: the demo digits (clips, or their single frames as images), Kinetics-600,
an ImageNet-layout image folder or any folder of videos."""

from __future__ import annotations

import os

from torch.utils.data import Dataset

from .demo import MovingDigits
from .images import ImageFolder
from .kinetics import Kinetics600
from .videos import VideoFolder

DATASETS = ("demo", "demo_images", "kinetics600", "imagenet", "videos")
BUILT_IN = ("demo", "demo_images")  # need no root
IMAGE_DATASETS = ("demo_images", "imagenet")  # 1-frame videos


def build_dataset(
    name: str,
    root: str | os.PathLike | None,
    split: str,
    frames: int,
    resolution: int,
    **kwargs,
) -> Dataset:
    """The dataset ``name`` (one of DATASETS) yielding ``(video, label)``; extra keyword arguments go
    to its class. BUILT_IN ones need no root; IMAGE_DATASETS yield one-frame videos, so frames must
    be 1."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}: use one of {DATASETS}")
    if name in IMAGE_DATASETS and frames != 1:
        raise ValueError(f"dataset {name!r} holds images, i.e. 1-frame videos; got frames={frames}")
    if name in BUILT_IN:
        return MovingDigits(split=split, frames=frames, resolution=resolution, **kwargs)
    if root is None:
        raise ValueError(f"dataset {name!r} needs root: the folder of your local copy")
    if name == "kinetics600":
        return Kinetics600(root, split=split, frames=frames, resolution=resolution, **kwargs)
    if name == "videos":
        return VideoFolder(root, split=split, frames=frames, resolution=resolution, **kwargs)
    return ImageFolder(root, split=split, resolution=resolution, **kwargs)
