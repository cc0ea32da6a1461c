"""Video data: decoding (decord | PyAV), Kinetics-600, any folder of videos, image folders as
1-frame videos, demo digits."""

from .bad_files import BadFiles, BadFileWarning, TooManyBadFilesError
from .clips import ClipSampling, VideoClips
from .demo import MovingDigits
from .images import ImageFolder, adm_center_crop
from .kinetics import Kinetics600, find_videos
from .manifest import Manifest, VideoEntry, load_or_build_manifest
from .registry import DATASETS, build_dataset
from .transforms import (
    center_crop,
    clip_transform,
    item_rng,
    random_crop,
    random_flip,
    resize_short_side,
)
from .video_io import VideoReadError, available_backends, read_clip, video_info, write_video
from .videos import VideoFolder

__all__ = [
    "DATASETS",
    "BadFileWarning",
    "BadFiles",
    "ClipSampling",
    "ImageFolder",
    "Kinetics600",
    "Manifest",
    "MovingDigits",
    "TooManyBadFilesError",
    "VideoClips",
    "VideoEntry",
    "VideoFolder",
    "VideoReadError",
    "adm_center_crop",
    "available_backends",
    "build_dataset",
    "center_crop",
    "clip_transform",
    "find_videos",
    "item_rng",
    "load_or_build_manifest",
    "random_crop",
    "random_flip",
    "read_clip",
    "resize_short_side",
    "video_info",
    "write_video",
]
