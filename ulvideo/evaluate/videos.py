"""Reading videos to score, from folders of video files or `.npy`/`.npz` arrays, as `3 x T x H x W`
in [-1, 1]."""

from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import torch
from torch import Tensor

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif")
ARRAY_SUFFIXES = (".npy", ".npz")

ARRAY_LAYOUTS = (
    "uint8 arrays as [N x] T x H x W x 3 in [0, 255], "
    "or float arrays as [N x] 3 x T x H x W in [-1, 1]"
)


def array_to_videos(array: np.ndarray) -> Tensor:
    """`N x 3 x T x H x W` float32 videos in [-1, 1] from an array in one of ARRAY_LAYOUTS."""
    array = np.asarray(array)
    if array.ndim == 4:
        array = array[None]
    if array.dtype == np.uint8 and array.ndim == 5 and array.shape[-1] == 3:
        return (
            torch.tensor(array).permute(0, 4, 1, 2, 3).float() / 127.5 - 1
        )  # a copy: memmaps are read-only
    if np.issubdtype(array.dtype, np.floating) and array.ndim == 5 and array.shape[1] == 3:
        return torch.tensor(array, dtype=torch.float32)
    raise ValueError(
        f"cannot read an array of {array.dtype} and shape {array.shape} as videos: "
        f"use {ARRAY_LAYOUTS}"
    )


def read_array_file(path: Path):
    """The videos in a `.npy` file (memory-mapped) or `.npz` file (its only array or 'videos')."""
    if path.suffix == ".npy":
        return np.load(path, mmap_mode="r")
    with np.load(path) as archive:
        if len(archive.files) == 1:
            return archive[archive.files[0]]
        if "videos" in archive.files:
            return archive["videos"]
        raise ValueError(f"{path} holds arrays {archive.files}; name the videos array 'videos'")


def read_video_file(path: Path, max_frames: int | None = None) -> Tensor:
    """The first `max_frames` frames (all if None) of a video file, decoded with PyAV."""
    frames = []
    with av.open(str(path)) as container:
        container.streams.video[0].thread_type = "AUTO"
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == max_frames:
                break
    if not frames:
        raise ValueError(f"{path} has no video frames")
    return array_to_videos(np.stack(frames))[0]


def video_files(path: str | Path) -> list[Path]:
    """The video and array files that `path` names: itself, or a folder's, sorted by name."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no videos at {path}")
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    files = [f for f in files if f.suffix.lower() in VIDEO_SUFFIXES + ARRAY_SUFFIXES]
    if not files:
        raise FileNotFoundError(
            f"no videos at {path}: expected {'/'.join(VIDEO_SUFFIXES + ARRAY_SUFFIXES)} files "
            f"({ARRAY_LAYOUTS})"
        )
    return files


def iter_videos(path: str | Path, max_frames: int | None = None) -> Iterator[Tensor]:
    """Yields every video under `path` (see `video_files`) as `3 x T x H x W` in [-1, 1]."""
    for file in video_files(path):
        if file.suffix.lower() in ARRAY_SUFFIXES:
            array = read_array_file(file)
            array = array[None] if array.ndim == 4 else array
            for video in array:
                yield array_to_videos(video)[0, :, :max_frames]
        else:
            yield read_video_file(file, max_frames)
