"""The one-folder-per-class layout, ``root/<split>/<class name>/<file>``, shared by videos and images."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

SPLITS = ("train", "val", "test")


def subdirs(path: Path) -> list[Path]:
    """The visible subfolders of a folder."""
    return [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]


def class_folder_files(
    root: Path, split: str | None, extensions: Iterable[str], recursive: bool = False
) -> tuple[list[tuple[str, int]], list[str]]:
    """``([(path relative to root, label), ...], classes)`` of the visible files with these
    extensions in ``root/split/<class>/`` (with ``recursive``, at any depth below it), plus files
    directly in ``root/split`` with label -1. Split None: ``root`` itself holds the class folders.

    Classes are the sorted folder names of all splits, so indices agree across splits.
    """
    extensions = {e.lower() for e in extensions}
    split_dir = root if split is None else root / split
    split_dirs = [root] if split is None else [root / s for s in {*SPLITS, split}]
    classes = sorted({p.name for d in split_dirs if d.is_dir() for p in subdirs(d)})
    folders = [(split_dir, -1)] + [(split_dir / n, i) for i, n in enumerate(classes)]
    candidates = [
        (file.relative_to(root).as_posix(), label)
        for folder, label in folders
        if folder.is_dir()
        for file in sorted(folder.rglob("*") if recursive and label >= 0 else folder.iterdir())
        if file.is_file() or file.is_symlink()
        if file.suffix.lower() in extensions
        if not any(part.startswith(".") for part in file.relative_to(folder).parts)
    ]
    return candidates, classes
