"""The one-folder-per-class layout, ``root/<split>/<class name>/<file>``, shared by videos and images."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

SPLITS = ("train", "val", "test")


def subdirs(path: Path) -> list[Path]:
    """The visible subfolders of a folder."""
    return [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]


def class_folder_files(
    root: Path, split: str, extensions: Iterable[str]
) -> tuple[list[tuple[str, int]], list[str]]:
    """``([(path relative to root, label), ...], classes)`` of the files with these extensions in
    ``root/split/<class>/``, plus files directly in ``root/split`` with label -1.

    Classes are the sorted folder names of all splits, so indices agree across splits.
    """
    extensions = {e.lower() for e in extensions}
    classes = sorted(
        {p.name for s in {*SPLITS, split} if (root / s).is_dir() for p in subdirs(root / s)}
    )
    split_dir = root / split
    folders = [(split_dir, -1)] + [(split_dir / n, i) for i, n in enumerate(classes)]
    candidates = [
        (file.relative_to(root).as_posix(), label)
        for folder, label in folders
        if folder.is_dir()
        for file in sorted(folder.iterdir())
        if file.is_file() or file.is_symlink()
        if file.suffix.lower() in extensions
    ]
    return candidates, classes
