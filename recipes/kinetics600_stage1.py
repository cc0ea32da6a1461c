"""Kinetics-600 stage 1: encoder, prior and decoder trained jointly (UL §2-§4).

    accelerate launch --config_file recipes/configs/multi_gpu.yaml recipes/kinetics600_stage1.py \
        --data_root /data/kinetics600 --output_dir runs/k600_stage1
    python recipes/kinetics600_stage1.py --preset tiny --data demo   # CPU smoke run, minutes
"""

import sys
from dataclasses import dataclass

from video_defaults import VideoStage1

from ulvideo.train import train_main


@dataclass
class Kinetics600Stage1(VideoStage1):
    """K600 stage 1: 17 frames at 128x128, 4x8x8 causal compression."""

    output_dir: str = "runs/k600_stage1"
    data: str = "kinetics600"


if __name__ == "__main__":
    sys.exit(train_main(Kinetics600Stage1))
