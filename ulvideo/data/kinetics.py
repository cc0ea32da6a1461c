"""Kinetics-600 clips from a local copy, in the official layout or one folder per class."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from .clips import VideoClips
from .folders import SPLITS, class_folder_files, subdirs
from .video_io import VIDEO_EXTENSIONS

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


class Kinetics600(VideoClips):
    """Kinetics-600 clips as ``(video, label)``, from ``root`` in the official layout or one folder
    per class (see ``layout_help``). Every other option is VideoClips's: clip sampling, bad files,
    the manifest cache."""

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        frames: int = 17,
        resolution: int | tuple[int, int] = 128,
        **options,
    ):
        if split not in SPLITS:
            raise ValueError(f"unknown Kinetics-600 split {split!r}: use one of {SPLITS}")
        super().__init__(root, split, frames, resolution, **options)

    def _find_videos(self) -> tuple[list[tuple[str, int]], list[str]]:
        return find_videos(self.root, self.split)
