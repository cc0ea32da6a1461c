"""Writing videos out: mp4 (H.264 through PyAV), GIF, PNG frame grids, side-by-side panels."""

from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """C x T x H x W in [-1, 1] -> T x H x W x 3 uint8 (a grey video is repeated to RGB)."""
    if video.ndim != 4:
        raise ValueError(f"expected one video C x T x H x W, got shape {tuple(video.shape)}")
    frames = ((video.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    frames = frames.permute(1, 2, 3, 0).cpu().numpy()
    return np.repeat(frames, 3, axis=-1) if frames.shape[-1] == 1 else frames


def write_mp4(video: torch.Tensor, path, fps: int = 8, crf: int = 10) -> Path:
    """H.264 mp4, yuv420p, playable everywhere; odd sizes are padded to even."""
    frames = to_uint8(video)
    t, h, w, _ = frames.shape
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        container = av.open(str(path), mode="w")
        stream = container.add_stream("libx264", rate=fps)
    except (av.error.FFmpegError, ValueError) as err:
        raise RuntimeError(
            f"cannot write {path}: PyAV has no libx264 encoder ({err}); install a PyAV wheel with "
            "H.264 (pip install av) or export GIF/PNG instead"
        ) from err
    with container:
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf)}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def write_gif(video: torch.Tensor, path, fps: int = 8) -> Path:
    frames = [Image.fromarray(f) for f in to_uint8(video)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
    return path


def write_png_grid(videos: torch.Tensor, path, pad: int = 1) -> Path:
    """B x C x T x H x W -> one PNG: a row per video, a column per frame."""
    rows = [np.concatenate([_pad(f, pad) for f in to_uint8(v)], axis=1) for v in videos]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)
    return path


def side_by_side(*videos: torch.Tensor) -> torch.Tensor:
    """Concatenate C x T x H x W videos along the width (e.g. real | reconstruction | sample)."""
    frames = min(v.shape[1] for v in videos)
    return torch.cat([v[:, :frames] for v in videos], dim=-1)


def _pad(frame: np.ndarray, pad: int) -> np.ndarray:
    return np.pad(frame, ((pad, pad), (pad, pad), (0, 0)), constant_values=255)
