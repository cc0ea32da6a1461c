"""Any folder of videos, stage 1: the K600 autoencoder setting (17 frames at 128x128, 4x8x8).
The folder may be flat, hold one folder per class, train/ val/ test/ folders, or come with a
`path [label]` list file (`--split_file`); see ulvideo.data.VideoFolder.

    accelerate launch --config_file recipes/configs/multi_gpu.yaml recipes/videos_stage1.py \
        --data_root /data/my_videos --output_dir runs/my_videos_stage1
    python recipes/videos_stage1.py --preset tiny --data demo   # CPU smoke run, minutes
"""

import sys
from dataclasses import dataclass

from video_defaults import VideoStage1

from ulvideo.train import train_main


@dataclass
class VideosStage1(VideoStage1):
    """Stage 1 on a folder of videos: 17 frames at 128x128, 4x8x8 causal compression."""

    output_dir: str = "runs/videos_stage1"
    data: str = "videos"


if __name__ == "__main__":
    sys.exit(train_main(VideosStage1))
