"""Model outputs as media files: mp4 (through the one video writer, ulvideo.data.write_video), GIF,
frame grids, side-by-side panels."""

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .data.video_io import write_video


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """C x T x H x W in [-1, 1] -> T x H x W x 3 uint8 (a grey video is repeated to RGB)."""
    if video.ndim != 4:
        raise ValueError(f"expected one video C x T x H x W, got shape {tuple(video.shape)}")
    frames = ((video.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    frames = frames.permute(1, 2, 3, 0).cpu().numpy()
    return np.repeat(frames, 3, axis=-1) if frames.shape[-1] == 1 else frames


def write_mp4(video: torch.Tensor, path, fps: int = 8, crf: int = 10) -> Path:
    """One C x T x H x W video in [-1, 1] as an H.264 mp4 (ulvideo.data.write_video)."""
    return write_video(path, to_uint8(video), fps=fps, options={"crf": str(crf)})


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
