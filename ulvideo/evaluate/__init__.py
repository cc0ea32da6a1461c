"""Evaluation: the metrics, the benchmark protocols and `ulvideo eval`.

Metrics of videos (tensors, files), which import nothing else of ulvideo and so score any model's
samples: `i3d` (the FVD feature network), `frechet` (streaming Fréchet statistics), `fvd` (FVD under
named protocols; `python -m ulvideo.evaluate.fvd` scores two folders of videos), `videos` (reading
the videos to score), `psnr_ssim` (PSNR and SSIM of two video batches).

Protocols and commands (`ulvideo eval TASK ...`), each one module: `k600` (Kinetics-600 frame
prediction FVD, task `k600`), `ucf101` (the UCF-101 class-conditional FVD protocol and its real clips,
task `ucf101-real`), `reconstruction` (stage-1 PSNR, SSIM, swapped-latent PSNR, bits/pixel and
rFVD of a model, task `reconstruction`); `digits` classifies the demo's moving-digits samples.

Names load lazily, so that `python -m ulvideo.evaluate.fvd` runs its module once.
"""

import importlib

TASKS = {"reconstruction": "reconstruction", "k600": "k600", "ucf101-real": "ucf101"}
EXPORTS = {
    "FeatureStats": "frechet",
    "frechet_distance": "frechet",
    "grouped_distance": "frechet",
    "stats_distance": "frechet",
    "PROTOCOLS": "fvd",
    "compute_fvd": "fvd",
    "preprocess": "fvd",
    "video_features": "fvd",
    "InceptionI3d": "i3d",
    "load_i3d": "i3d",
    "frame_prediction_features": "k600",
    "frame_prediction_fvd": "k600",
    "psnr": "psnr_ssim",
    "ssim": "psnr_ssim",
    "write_real_clips": "ucf101",
}
__all__ = sorted(EXPORTS)


def __getattr__(name: str):
    if name not in EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{EXPORTS[name]}", __name__), name)


def main(argv: list[str]) -> object:
    """`ulvideo eval TASK [flags]`."""
    if not argv or argv[0] not in TASKS:
        raise ValueError(
            f"ulvideo eval needs a task first: one of {', '.join(TASKS)} (then --help for its flags)"
        )
    module = importlib.import_module(f".{TASKS[argv[0]]}", __name__)
    return module.main(argv[1:])
