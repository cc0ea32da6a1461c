"""Evaluation: I3D, Fréchet statistics, FVD, the Kinetics-600 frame prediction protocol, PSNR/SSIM.

It reads videos (tensors, files) and models through ulvideo's public API only, so it can score any
model's samples.
"""

from .frechet import FeatureStats, frechet_distance, grouped_distance, stats_distance
from .fvd import compute_fvd, preprocess, video_features
from .i3d import InceptionI3d, load_i3d
from .k600 import frame_prediction_features, frame_prediction_fvd
from .reconstruction import evaluate_stage1, psnr, ssim

__all__ = [
    "FeatureStats",
    "InceptionI3d",
    "compute_fvd",
    "evaluate_stage1",
    "frame_prediction_features",
    "frame_prediction_fvd",
    "frechet_distance",
    "grouped_distance",
    "load_i3d",
    "preprocess",
    "psnr",
    "ssim",
    "stats_distance",
    "video_features",
]
