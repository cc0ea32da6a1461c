"""Any folder of videos as a dataset: a flat folder, one folder per class, or a list file of
``path [label]`` lines such as UCF-101's official splits (``trainlist01.txt``, ``classInd.txt``)."""

from __future__ import annotations

import os
from pathlib import Path

from .clips import VideoClips
from .folders import SPLITS, class_folder_files
from .video_io import VIDEO_EXTENSIONS

CLASS_INDEX = "classInd.txt"  # UCF-101's "<id> <class name>" lines, ids from 1


def layout_help(root: str | os.PathLike) -> str:
    """The supported layouts, spelled out for ``root``."""
    extensions = ", ".join(e[1:] for e in VIDEO_EXTENSIONS)
    return (
        f"Expected video files ({extensions}) under {root}: directly (unlabelled), in one folder "
        f"per class ({root}/<class name>/..., at any depth), optionally inside split folders "
        f"({root}/train/, {root}/val/, {root}/test/); or a list file of `path [label]` lines, "
        "paths relative to the root, given as split_file (UCF-101: ucfTrainTestlist/trainlist01.txt)."
    )


def folder_videos(root: Path, split: str) -> tuple[list[tuple[str, int]], list[str]]:
    """``([(path relative to root, label), ...], classes)`` of a split of a folder of videos.

    With split folders (``root/train``, ...) the split is its folder; without, ``root`` is the train
    split and there is no other. Videos under a class folder are labelled with the class's index in
    the sorted class names; videos directly in the split's folder are unlabelled (-1).
    """
    if any((root / s).is_dir() for s in SPLITS):
        if not (root / split).is_dir():
            raise FileNotFoundError(f"no {split} videos: {root / split} does not exist")
        candidates, classes = class_folder_files(root, split, VIDEO_EXTENSIONS, recursive=True)
    elif split == "train":
        candidates, classes = class_folder_files(root, None, VIDEO_EXTENSIONS, recursive=True)
    else:
        raise FileNotFoundError(
            f"no {split} videos: {root} has no split folders, so all its videos form the train "
            f"split; put held-out videos in {root}/{split}/ and the others in {root}/train/"
        )
    return candidates, classes


def split_list_file(list_file: Path, split: str) -> Path | None:
    """The list file of ``split`` in ``list_file``'s family: its name with the split it names
    replaced (UCF-101: trainlist01.txt -> testlist01.txt). A name that names no split is the train
    split's only; None for any other split."""
    for named in SPLITS:
        if named in list_file.name:
            return list_file.with_name(list_file.name.replace(named, split, 1))
    return list_file if split == "train" else None


def resolve_list_file(root: str | os.PathLike, split_file: str | os.PathLike) -> Path:
    """``split_file`` as given, or else relative to ``root``; FileNotFoundError if neither exists."""
    for path in (Path(split_file), Path(root) / split_file):
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"split file {split_file} does not exist (neither as given nor under {root})"
    )


def read_list_file(path: Path) -> list[tuple[str, str | None]]:
    """``[(path, label or None), ...]`` of the ``path [label]`` lines of a list file; blank lines
    and ``#`` comments are skipped. A line ending in a video extension is all path (spaces too)."""
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(maxsplit=1)
        if Path(line).suffix.lower() in VIDEO_EXTENSIONS or len(parts) == 1:
            rows.append((line, None))
        else:
            rows.append((parts[0], parts[1]))
    return rows


def read_class_index(path: Path) -> list[str]:
    """Class names by UCF-101 ``classInd.txt`` id (``<id> <name>`` lines, ids 1, 2, ...)."""
    names = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or not parts[0].isdigit():
            raise ValueError(f"{path} line {number}: expected `<id> <class name>`, got {line!r}")
        names[int(parts[0])] = parts[1].strip()
    if sorted(names) != list(range(1, len(names) + 1)):
        raise ValueError(f"{path}: class ids must be 1, 2, ..., {len(names)} with none missing")
    return [names[i] for i in range(1, len(names) + 1)]


def list_file_videos(list_file: Path, split: str) -> tuple[list[tuple[str, int]], list[str]]:
    """``([(path relative to root, label), ...], classes)`` of the split's list file in
    ``list_file``'s family (see ``split_list_file``).

    Classes: those of a ``classInd.txt`` beside the list file, labels being its 1-based ids or its
    names. Without it, labels of the family's lists are 0-based indices if all are integers, else
    names, sorted, so that indices agree across splits. An unlabelled line takes the class named by
    its first folder (UCF-101's test lists), else -1.
    """
    path = split_list_file(list_file, split)
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"no {split} list file beside {list_file}: "
            + (f"{path} does not exist" if path else "its name names no split (train, val, test)")
        )
    rows = read_list_file(path)
    if not rows:
        raise FileNotFoundError(f"list file {path} lists no videos")
    class_index = list_file.with_name(CLASS_INDEX)
    classes = _list_classes(list_file, class_index)
    names = {name: i for i, name in enumerate(classes)}
    ids = {str(i + 1): i for i in range(len(classes))} if class_index.is_file() else names
    candidates = []
    for video, label in rows:
        if label is None:
            candidates.append((video, names.get(Path(video).parts[0], -1)))
        elif label in ids or label in names:
            candidates.append((video, ids.get(label, names.get(label))))
        else:
            raise ValueError(
                f"{path}: label {label!r} of {video} is neither an id nor a name in {class_index}"
            )
    return candidates, classes


def _list_classes(list_file: Path, class_index: Path) -> list[str]:
    if class_index.is_file():
        return read_class_index(class_index)
    family = [split_list_file(list_file, s) for s in SPLITS]
    labels = {label for p in family if p and p.is_file() for _, label in read_list_file(p)}
    labels.discard(None)
    if all(label.isdigit() for label in labels):
        return [str(i) for i in range(max(map(int, labels), default=-1) + 1)]
    return sorted(labels)


class VideoFolder(VideoClips):
    """Clips of any folder of videos as ``(video, label)``, in one of the layouts of
    ``layout_help``: ``split_file`` (a path, or relative to ``root``) chooses a family of list
    files, e.g. UCF-101's ``trainlist01.txt``; without it, ``root`` is searched for videos. Every
    other option is VideoClips's: clip sampling, bad files (a listed video that does not exist is
    one), the manifest cache."""

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        frames: int = 17,
        resolution: int = 128,
        split_file: str | os.PathLike | None = None,
        **options,
    ):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}: use one of {SPLITS}")
        if not Path(root).is_dir():
            raise FileNotFoundError(f"dataset root {root} does not exist. {layout_help(root)}")
        self.split_file = None if split_file is None else resolve_list_file(root, split_file)
        super().__init__(root, split, frames, resolution, **options)

    def _find_videos(self) -> tuple[list[tuple[str, int]], list[str]]:
        if self.split_file is not None:
            return list_file_videos(self.split_file, self.split)
        candidates, classes = folder_videos(self.root, self.split)
        if not candidates:
            raise FileNotFoundError(
                f"no {self.split} videos found under {self.root}. {layout_help(self.root)}"
            )
        return candidates, classes

    def _manifest_name(self) -> str:
        if self.split_file is None:
            return self.split
        return f"{self.split}-{split_list_file(self.split_file, self.split).stem}"
