"""Clips cut from an indexed set of video files: which frames, which window, which flip.

VideoClips is the base of every video-file dataset (Kinetics-600, any folder of videos): it indexes
the files once in a cached manifest, skips missing, corrupt and too-short ones, and cuts each item's
clip as its ClipSampling says, deterministically in (seed, epoch, index).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..geometry import frame_size
from .bad_files import BadFiles, FileDataset
from .manifest import VideoEntry, default_manifest_paths, load_or_build_manifest
from .transforms import CROPS, clip_transform
from .video_io import VideoReadError, read_clip, resolve_backend


@dataclass(frozen=True)
class ClipSampling:
    """How a clip is cut from a video.

    ``frames`` frames ``stride`` apart, or with ``fps`` set, the stride nearest to the video's frame
    rate / ``fps`` (at least 1), so that clips of videos at 25 and 50 fps span the same time. The
    first frame is uniformly random or centred (``temporal_crop``). Frames have their short side
    resized to ``resolution`` (a side, or (height, width): resized to cover it), then a random or
    centred window of that size is kept (``spatial_crop``),
    mirrored left-right with probability 1/2 if ``flip``.
    """

    frames: int = 17
    resolution: int | tuple[int, int] = 128
    stride: int = 1
    fps: float | None = None
    temporal_crop: str = "random"
    spatial_crop: str = "random"
    flip: bool = True

    def __post_init__(self):
        if self.frames < 1 or min(frame_size(self.resolution)) < 1 or self.stride < 1:
            raise ValueError(
                "need frames, resolution, stride >= 1, got "
                f"{self.frames}, {self.resolution}, {self.stride}"
            )
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"target fps must be > 0, got {self.fps}")
        if self.fps is not None and self.stride != 1:
            raise ValueError(
                f"give a frame stride ({self.stride}) or a target fps ({self.fps}), not both"
            )
        for name in ("temporal_crop", "spatial_crop"):
            if getattr(self, name) not in CROPS:
                raise ValueError(f"{name} must be one of {CROPS}, got {getattr(self, name)!r}")

    @classmethod
    def default(cls, train: bool, **options) -> ClipSampling:
        """Training: random start, random window and flip; evaluation: centred, no flip. Options
        given as None keep that default."""
        crop = "random" if train else "center"
        defaults = dict(temporal_crop=crop, spatial_crop=crop, flip=train)
        given = {name: value for name, value in options.items() if value is not None}
        return cls(**{**defaults, **given})

    def stride_for(self, entry: VideoEntry) -> int:
        """The frame stride for this video: ``stride``, or the one nearest to its fps / ``fps``."""
        if self.fps is None:
            return self.stride
        if entry.fps <= 0:
            raise VideoReadError(
                f"{entry.path}: frame rate unknown, so no stride meets the target fps {self.fps}; "
                "use a frame stride instead"
            )
        return max(1, round(entry.fps / self.fps))

    def span(self, stride: int) -> int:
        """Frames of the video a clip covers, first to last."""
        return (self.frames - 1) * stride + 1

    def first_frame(self, num_frames: int, stride: int, rng: np.random.Generator) -> int:
        """The first frame of the clip in a video of ``num_frames`` frames."""
        last = num_frames - self.span(stride)
        return int(rng.integers(0, last + 1)) if self.temporal_crop == "random" else last // 2

    def transform(self, frames: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        """Decoded uint8 ``(T, H, W, 3)`` frames to the float32 ``3 x T x H x W`` video."""
        return clip_transform(frames, self.resolution, rng, self.spatial_crop, self.flip)


class VideoClips(FileDataset):
    """Clips of video files as ``(video, label)``: float32 ``3 x frames x H x W`` in [-1, 1]
    (``resolution`` a side, or (H, W) to keep a non-square aspect ratio) and the class index (-1 if unlabelled). Subclasses define ``_find_videos()``, the
    ``([(path relative to root, label), ...], classes)`` of the split.

    Clips are cut as ``ClipSampling.default(train, ...)`` says: by default training (split "train")
    takes a random start, random window and flip, evaluation a centred start and window. Randomness
    depends on (seed, epoch, index) only; call ``set_epoch`` each epoch. Missing, corrupt and
    too-short videos are skipped with a warning and listed in ``bad_files``; more than
    ``max_bad_fraction`` of them raises TooManyBadFilesError. The index is cached in a manifest
    (``manifest`` path, default under root, else the user cache); under several processes build it
    on one first (``with accelerator.main_process_first():``).
    """

    read_errors = VideoReadError

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        frames: int = 17,
        resolution: int | tuple[int, int] = 128,
        *,
        stride: int = 1,
        fps: float | None = None,
        train: bool | None = None,
        temporal_crop: str | None = None,
        spatial_crop: str | None = None,
        flip: bool | None = None,
        backend: str | None = None,
        max_bad_fraction: float = 0.01,
        manifest: str | os.PathLike | None = None,
        seed: int = 0,
    ):
        self.train = split == "train" if train is None else train
        self.sampling = ClipSampling.default(
            self.train,
            frames=frames,
            resolution=resolution,
            stride=stride,
            fps=fps,
            temporal_crop=temporal_crop,
            spatial_crop=spatial_crop,
            flip=flip,
        )
        self.backend = resolve_backend(backend)
        self.root, self.split = Path(root), split
        self.seed, self.epoch = seed, 0
        candidates, self.classes = self._find_videos()
        self._bad = BadFiles(len(candidates), max_bad_fraction, "video")
        cache_paths = (
            [Path(manifest)]
            if manifest is not None
            else default_manifest_paths(root, self._manifest_name())
        )
        index = load_or_build_manifest(self.root, candidates, cache_paths, self.backend)
        for relative, reason in index.bad.items():
            self._bad.add(str(self.root / relative), reason)
        self.entries, self.strides = [], []
        for entry in index.entries:
            try:
                stride = self.sampling.stride_for(entry)
            except VideoReadError as error:
                self._bad.add(str(self.root / entry.path), str(error))
                continue
            if entry.num_frames >= self.sampling.span(stride):
                self.entries.append(entry)
                self.strides.append(stride)
            else:
                reason = (
                    f"too short: {entry.num_frames} frames, a clip needs "
                    f"{self.sampling.span(stride)}"
                )
                self._bad.add(str(self.root / entry.path), reason)
        self._bad.check()
        self.paths = [str(self.root / entry.path) for entry in self.entries]

    def _find_videos(self) -> tuple[list[tuple[str, int]], list[str]]:
        """Each subclass's layout: (relative path, label) of every video, and the class names."""
        raise NotImplementedError(f"{type(self).__name__} must say where its videos are")

    def _manifest_name(self) -> str:
        """Names this index's cached manifest among the root's others."""
        return self.split

    def shapes(self) -> np.ndarray:
        """``(N, 3)``: the longest clip (frames at its stride, height, width) of each video."""
        rows = [
            (1 + (e.num_frames - 1) // s, e.height, e.width)
            for e, s in zip(self.entries, self.strides)
        ]
        return np.array(rows, dtype=np.int64).reshape(-1, 3)

    def load_shaped(self, index: int, shape, rng: np.random.Generator):
        """Item ``index`` cut at ``shape`` (frames, height, width) instead of the dataset's own;
        raises ``read_errors`` for a bad file (no fallback)."""
        frames, height, width = shape
        sampling = dataclasses.replace(self.sampling, frames=frames, resolution=(height, width))
        return self._load(index, rng, sampling)

    def _load(
        self, index: int, rng: np.random.Generator, sampling: ClipSampling | None = None
    ) -> tuple[torch.Tensor, int]:
        sampling = sampling or self.sampling
        entry, stride = self.entries[index], self.strides[index]
        start = sampling.first_frame(entry.num_frames, stride, rng)
        frames = read_clip(self.paths[index], start, sampling.frames, stride, self.backend)
        return sampling.transform(frames, rng), entry.label
