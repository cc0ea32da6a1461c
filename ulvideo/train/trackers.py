"""Experiment trackers beside metrics.jsonl: `--report_to none | tensorboard | wandb | all`.

They go through accelerate's trackers (`Accelerator(log_with=...)`): the run's config is logged
once when the run starts, every record of metrics.jsonl is logged at its step with the same
numeric values, and each stage-1 evaluation logs an image of the evaluation clips above their
reconstructions. The default, none, writes metrics.jsonl only; `all` is every tracker below that is
installed. TensorBoard writes to `<output_dir>/ulvideo/`; W&B to its project "ulvideo" (offline
with WANDB_MODE=offline), the run named after the output folder.
"""

import importlib.util
import json

import numpy as np
import torch

TRACKERS = ("tensorboard", "wandb")
REPORT_TO = ("none", "all", *TRACKERS)
PROJECT = "ulvideo"


def trackers_for(report_to: str) -> list[str]:
    """accelerate's `log_with` for `report_to`, with a clear error for an unknown or missing one."""
    if report_to not in REPORT_TO:
        raise ValueError(f"report_to must be one of {', '.join(REPORT_TO)}, got {report_to!r}")
    installed = [name for name in TRACKERS if importlib.util.find_spec(name) is not None]
    if report_to == "none":
        return []
    if report_to == "all":
        if not installed:
            raise ValueError(
                "--report_to all: neither tensorboard nor wandb is installed: pip install "
                "tensorboard (or wandb), or --report_to none (metrics.jsonl only)"
            )
        return installed
    if report_to not in installed:
        raise ValueError(
            f"--report_to {report_to}: {report_to} is not installed: pip install {report_to}, or "
            "--report_to none (metrics.jsonl only)"
        )
    return [report_to]


def tracker_config(config: dict) -> dict:
    """The run's config as trackers take it (TensorBoard's hparams: numbers, strings, booleans)."""
    return {
        k: v if isinstance(v, (bool, int, float, str)) else json.dumps(v) for k, v in config.items()
    }


def clips_image(rows: list[torch.Tensor]) -> np.ndarray:
    """One H x W x 3 uint8 image: row i holds the frames of clip rows[i] (3 x T x h x w in
    [-1, 1]) side by side."""
    from ..media import to_uint8

    strips = [torch.cat(list(clip.unbind(1)), dim=2) for clip in rows]
    return to_uint8(torch.cat(strips, dim=1)[:, None])[0]  # one frame: (rows h) x (T w)


def log_clips(accelerator, step: int, videos: dict[str, torch.Tensor], count: int = 4) -> None:
    """An image per evaluation: each of the first `count` clips of videos' first entry above the
    same clip of the others (real above reconstruction), to every image-taking tracker."""
    if not videos or not accelerator.trackers:
        return
    name = "eval/" + "_over_".join(videos)
    first = min(count, *(len(v) for v in videos.values()))
    image = clips_image([v[i] for i in range(first) for v in videos.values()])
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.log_images({name: image[None]}, step=step, dataformats="NHWC")
        elif tracker.name == "wandb":
            tracker.log_images({name: [image]}, step=step)
