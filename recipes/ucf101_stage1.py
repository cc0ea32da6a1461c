"""UCF-101 stage 1: the K600 autoencoder setting (17 frames at 128x128, 4x8x8) on UCF-101's
official split 1 (`--split_file` picks the split; the test list is the held-out set).

    accelerate launch --config_file recipes/configs/multi_gpu.yaml recipes/ucf101_stage1.py \
        --data_root /data/UCF-101 --split_file /data/ucfTrainTestlist/trainlist01.txt
    python recipes/ucf101_stage1.py --preset tiny --data demo   # CPU smoke run, minutes
"""

import sys
from dataclasses import dataclass

from video_defaults import VideoStage1

from ulvideo.train import train_main


@dataclass
class UCF101Stage1(VideoStage1):
    """UCF-101 stage 1: 17 frames at 128x128 (16 scored by FVD), 4x8x8 causal compression."""

    output_dir: str = "runs/ucf101_stage1"
    data: str = "videos"


if __name__ == "__main__":
    sys.exit(train_main(UCF101Stage1))
