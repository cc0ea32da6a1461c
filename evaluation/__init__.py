"""Evaluation, pure metrics: I3D, Fréchet statistics, FVD, the Kinetics-600 frame prediction and
UCF-101 class-conditional protocols, PSNR/SSIM.

It reads videos (tensors, files) and imports nothing from ulvideo, so it can score any model's
samples; the glue that loads ulvideo checkpoints is ulvideo.evaluate (`ulvideo eval ...`). Names
load lazily, so that `python -m evaluation.fvd` runs its module once.
"""

import importlib

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
    "psnr": "reconstruction",
    "ssim": "reconstruction",
    "write_real_clips": "ucf101",
}
__all__ = sorted(EXPORTS)


def __getattr__(name: str):
    if name not in EXPORTS:
        raise AttributeError(f"module 'evaluation' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{EXPORTS[name]}", __name__), name)
