"""Kinetics-600 clips from a local copy, in the official layout or one folder per class."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import torch

from .bad_files import BadFiles, FileDataset
from .folders import SPLITS, class_folder_files, subdirs
from .manifest import default_manifest_paths, load_or_build_manifest
from .transforms import clip_transform
from .video_io import VideoReadError, read_clip, resolve_backend

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov")
CSV_COLUMNS = ("youtube_id", "time_start", "time_end")


def layout_help(root: str | os.PathLike, split: str) -> str:
    """The two supported layouts, spelled out for ``root`` and ``split``."""
    return (
        f"Expected the official Kinetics-600 layout, {root}/annotations/{split}.csv (or "
        f"{root}/{split}.csv) with columns label,youtube_id,time_start,time_end,split and clips "
        f"{root}/{split}/{{youtube_id}}_{{time_start:06d}}_{{time_end:06d}}.mp4, "
        f"or one folder per class, {root}/{split}/<class name>/*.mp4."
    )


def find_videos(root: str | os.PathLike, split: str) -> tuple[list[tuple[str, int]], list[str]]:
    """``([(path relative to root, label), ...], classes)`` for a split, in either layout.

    Class indices are the positions in the sorted class names. Labels are -1 where unknown.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist. {layout_help(root, split)}")
    split_dir = root / split
    if split_dir.is_dir() and subdirs(split_dir):
        candidates, classes = class_folder_files(root, split, VIDEO_EXTENSIONS)
    elif (csv_path := _annotation_csv(root, split)) is not None:
        candidates, classes = _official(root, split, csv_path)
    else:
        candidates, classes = [], []
    if not candidates:
        raise FileNotFoundError(f"no {split} videos found under {root}. {layout_help(root, split)}")
    return candidates, classes


def _is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def _annotation_csv(root: Path, split: str) -> Path | None:
    for path in (root / "annotations" / f"{split}.csv", root / f"{split}.csv"):
        if path.is_file():
            return path
    return None


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"annotation file {path} lacks columns {missing}; "
                "expected label,youtube_id,time_start,time_end,split"
            )
        return list(reader)


def _official(root: Path, split: str, csv_path: Path) -> tuple[list[tuple[str, int]], list[str]]:
    # Classes: the labels of every split's annotations, so indices agree across splits.
    labels = {
        row.get("label") or ""
        for s in SPLITS
        if (path := _annotation_csv(root, s)) is not None
        for row in _read_csv(path)
    }
    classes = sorted(labels - {""})
    index = {name: i for i, name in enumerate(classes)}
    split_dir = root / split
    on_disk = (
        {p.stem: p.name for p in split_dir.iterdir() if _is_video(p)} if split_dir.is_dir() else {}
    )
    candidates = []
    for row in _read_csv(csv_path):
        stem = f"{row['youtube_id']}_{int(float(row['time_start'])):06d}_{int(float(row['time_end'])):06d}"
        name = on_disk.get(stem, f"{stem}.mp4")  # a missing file is kept and reported as bad
        candidates.append((f"{split}/{name}", index.get(row.get("label") or "", -1)))
    return candidates, classes


class Kinetics600(FileDataset):
    """Kinetics-600 clips as ``(video, label)``: float32 ``3 x frames x resolution x resolution`` in
    [-1, 1] and the class index (-1 if unlabelled).

    Training (default for split "train") takes a random start, random crop and flip; evaluation a
    centred start and centre crop. Randomness depends on (seed, epoch, index) only; call
    ``set_epoch`` each epoch. Missing, corrupt and too-short videos are skipped with a warning and
    listed in ``bad_files``; more than ``max_bad_fraction`` of them raises TooManyBadFilesError.
    The index is cached in a manifest (``manifest`` path, default under root, else the user cache);
    under several processes build it on one first (``with accelerator.main_process_first():``).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        frames: int = 17,
        resolution: int = 128,
        stride: int = 1,
        train: bool | None = None,
        backend: str | None = None,
        max_bad_fraction: float = 0.01,
        manifest: str | os.PathLike | None = None,
        seed: int = 0,
    ):
        if split not in SPLITS:
            raise ValueError(f"unknown Kinetics-600 split {split!r}: use one of {SPLITS}")
        if frames < 1 or resolution < 1 or stride < 1:
            raise ValueError(
                f"need frames, resolution, stride >= 1, got {frames}, {resolution}, {stride}"
            )
        self.backend = resolve_backend(backend)
        self.root = Path(root)
        self.split, self.frames, self.resolution, self.stride = split, frames, resolution, stride
        self.train = split == "train" if train is None else train
        self.seed, self.epoch = seed, 0
        candidates, self.classes = find_videos(self.root, split)
        cache_paths = (
            [Path(manifest)] if manifest is not None else default_manifest_paths(root, split)
        )
        self._bad = BadFiles(len(candidates), max_bad_fraction, "video")
        index = load_or_build_manifest(self.root, candidates, cache_paths, self.backend)
        for relative, reason in index.bad.items():
            self._bad.add(str(self.root / relative), reason)
        span = (frames - 1) * stride + 1
        self.entries = []
        for entry in index.entries:
            if entry.num_frames >= span:
                self.entries.append(entry)
            else:
                reason = f"too short: {entry.num_frames} frames, a clip needs {span}"
                self._bad.add(str(self.root / entry.path), reason)
        self._bad.check()
        self.paths = [str(self.root / entry.path) for entry in self.entries]

    read_errors = VideoReadError

    def _load(self, index: int, rng: np.random.Generator) -> tuple[torch.Tensor, int]:
        entry = self.entries[index]
        last_start = entry.num_frames - (self.frames - 1) * self.stride - 1
        start = int(rng.integers(0, last_start + 1)) if self.train else last_start // 2
        frames = read_clip(self.paths[index], start, self.frames, self.stride, self.backend)
        return clip_transform(frames, self.resolution, self.train, rng), entry.label
