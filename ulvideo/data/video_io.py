"""Read clips of frames from video files with decord (default) or PyAV (fallback), seeking when
possible; write frames to a video file.

Frame ``i`` of a file is its ``i``-th frame in presentation order. Both backends index frames from the
container's packet timestamps, so on the same file they return the same frames.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

BACKENDS = ("decord", "pyav")
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov")  # what dataset discovery reads


class VideoReadError(OSError, ValueError):
    """A video file is missing, unreadable, corrupt or too short. The message names the file."""


def available_backends() -> list[str]:
    """The installed backends, preferred first."""
    modules = {"decord": "decord", "pyav": "av"}
    return [name for name in BACKENDS if importlib.util.find_spec(modules[name]) is not None]


def resolve_backend(backend: str | None) -> str | None:
    """Check a backend name; None (auto: decord, falling back to PyAV per file) stays None."""
    if backend is None:
        if not available_backends():
            raise ImportError("no video backend: install decord or PyAV (`pip install av`)")
        return None
    if backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}: use one of {BACKENDS} or None (auto)")
    if backend not in available_backends():
        package = "decord" if backend == "decord" else "av"
        raise ImportError(f"video backend {backend!r} is not installed: `pip install {package}`")
    return backend


def clip_indices(start: int, num_frames: int, stride: int = 1) -> np.ndarray:
    """The frame indices of a clip: ``start, start + stride, ...``, ``num_frames`` of them."""
    if start < 0 or num_frames < 1 or stride < 1:
        raise ValueError(
            f"need start >= 0, num_frames >= 1 and stride >= 1, got {start}, {num_frames}, {stride}"
        )
    return start + stride * np.arange(num_frames)


def read_clip(
    path: str | os.PathLike,
    start: int,
    num_frames: int,
    stride: int = 1,
    backend: str | None = None,
) -> np.ndarray:
    """Frames ``start, start + stride, ...`` of a video as uint8 ``(T, H, W, 3)`` RGB.

    backend None uses decord and, for a file decord cannot read, PyAV. Raises VideoReadError for a
    missing, corrupt or too-short file.
    """
    indices = clip_indices(start, num_frames, stride)
    return _with_backend(path, backend, lambda reader: reader.frames_at(indices))


def video_info(path: str | os.PathLike, backend: str | None = None) -> tuple[int, float, int, int]:
    """``(num_frames, fps, height, width)`` of a video; decodes its first frame to check it is readable."""
    return _with_backend(path, backend, lambda reader: reader.info())


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    fps: int = 25,
    codec: str = "libx264",
    keyframe_interval: int = 12,
    options: dict[str, str] | None = None,
) -> Path:
    """The one video writer: uint8 ``(T, H, W, 3)`` RGB frames to a yuv420p file with PyAV (H.264
    by default, playable everywhere). An odd height or width is padded to even by repeating the
    last row or column. ``options`` go to the encoder, e.g. ``{"qp": "0"}`` for lossless libx264."""
    import av

    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames (T, H, W, 3), got {frames.dtype} {frames.shape}")
    _, h, w, _ = frames.shape
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")  # yuv420p
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        container = av.open(str(path), "w")
        stream = container.add_stream(codec, rate=fps)
    except (av.error.FFmpegError, ValueError) as err:
        raise RuntimeError(
            f"cannot write {path}: PyAV has no {codec} encoder ({err}); install a PyAV wheel with "
            "it (pip install av) or export GIF/PNG instead"
        ) from err
    with container:
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.gop_size = keyframe_interval
        stream.options = options or {}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def _with_backend(path, backend, action):
    backend = resolve_backend(backend)
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise VideoReadError(f"{path}: video file is missing")
    if backend is not None:
        return action(_READERS[backend](path))
    names = available_backends()
    for name in names[:-1]:
        try:
            return action(_READERS[name](path))
        except VideoReadError:
            pass
    return action(_READERS[names[-1]](path))


def _check_range(path: str, indices: np.ndarray, length: int) -> None:
    if indices[-1] >= length:
        raise VideoReadError(
            f"{path}: video too short: has {length} frames, the clip needs frame {indices[-1]}"
        )


class _DecordReader:
    def __init__(self, path: str):
        import decord

        self.path = path
        try:
            self.reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
        except (RuntimeError, decord.DECORDError) as error:
            raise VideoReadError(f"{path}: decord cannot open the video ({error})") from None

    def frames_at(self, indices: np.ndarray) -> np.ndarray:
        import decord

        _check_range(self.path, indices, len(self.reader))
        try:
            frames = self.reader.get_batch(indices.tolist()).asnumpy()
        except (RuntimeError, decord.DECORDError) as error:
            raise VideoReadError(
                f"{self.path}: decord cannot decode the video ({error}); try backend='pyav'"
            ) from None
        return self._checked(frames)

    def info(self) -> tuple[int, float, int, int]:
        height, width, _ = self.frames_at(np.zeros(1, dtype=np.int64)).shape[1:]
        return len(self.reader), float(self.reader.get_avg_fps()), height, width

    def _checked(self, frames: np.ndarray) -> np.ndarray:
        # decord 0.6 returns mis-strided frames for a few small widths (16, 24, 48, 72 px).
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise VideoReadError(
                f"{self.path}: decord decoded frames of shape {frames.shape[1:]}, not (H, W, 3); "
                "read this file with backend='pyav'"
            )
        return frames


class _PyAVReader:
    def __init__(self, path: str):
        import av

        self.path = path
        self._av_error = av.error.FFmpegError
        try:
            self.container = av.open(path)
        except (self._av_error, OSError) as error:
            raise VideoReadError(f"{path}: PyAV cannot open the video ({error})") from None
        if not self.container.streams.video:
            self.container.close()
            raise VideoReadError(f"{path}: the file holds no video stream")
        self.stream = self.container.streams.video[0]
        self.stream.codec_context.thread_count = 1  # parallelism comes from DataLoader workers

    def frames_at(self, indices: np.ndarray) -> np.ndarray:
        try:
            with self.container:
                frame_pts = self._frame_pts()
                _check_range(self.path, indices, len(frame_pts))
                wanted = [frame_pts[i] for i in indices]
                decoded = self._decode_from(wanted[0], set(wanted), max(wanted))
                if len(decoded) < len(set(wanted)):  # the seek landed past the first frame
                    decoded = self._decode_from(frame_pts[0], set(wanted), max(wanted))
        except self._av_error as error:
            raise VideoReadError(f"{self.path}: PyAV cannot decode the video ({error})") from None
        if len(decoded) < len(set(wanted)):
            raise VideoReadError(f"{self.path}: frames {indices.tolist()} could not be decoded")
        return np.stack([decoded[pts] for pts in wanted])

    def info(self) -> tuple[int, float, int, int]:
        num_frames = len(self._frame_pts())
        height, width, _ = self.frames_at(np.zeros(1, dtype=np.int64)).shape[1:]
        rate = self.stream.average_rate or self.stream.guessed_rate
        return num_frames, float(rate) if rate else 0.0, height, width

    def _frame_pts(self) -> list[int]:
        if not hasattr(self, "_pts"):
            self._pts = self._frame_pts_from_demux()
        return self._pts

    def _frame_pts_from_demux(self) -> list[int]:
        # Presentation timestamps of all frames, read from packets without decoding (as decord does).
        stamps = []
        for packet in self.container.demux(self.stream):
            if packet.size:
                stamp = packet.pts if packet.pts is not None else packet.dts
                if stamp is None:
                    raise VideoReadError(f"{self.path}: video packets carry no timestamps")
                stamps.append(stamp)
        return sorted(stamps)

    def _decode_from(self, seek_pts: int, wanted: set[int], last: int) -> dict[int, np.ndarray]:
        self.container.seek(seek_pts, stream=self.stream, backward=True, any_frame=False)
        decoded = {}
        for frame in self.container.decode(self.stream):
            if frame.pts in wanted:
                decoded[frame.pts] = frame.to_ndarray(format="rgb24")
            if frame.pts is not None and frame.pts >= last:
                break
        return decoded


_READERS = {"decord": _DecordReader, "pyav": _PyAVReader}
