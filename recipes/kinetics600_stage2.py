"""Kinetics-600 stage 2: the base model on frozen latents, frame prediction from 5 frames (UL §5).

    accelerate launch --config_file recipes/configs/multi_gpu.yaml recipes/kinetics600_stage2.py \
        --data_root /data/kinetics600 --stage1_checkpoint runs/k600_stage1/final
    python recipes/kinetics600_stage2.py --base_preset tiny --data demo \
        --stage1_checkpoint runs/k600_stage1/final   # CPU smoke run, minutes
"""

import sys
from dataclasses import dataclass

from video_defaults import VideoStage2

from ulvideo.train import train_main


@dataclass
class Kinetics600Stage2(VideoStage2):
    """K600 stage 2: 5 context frames = 2 causal latent frames, given clean, outside the loss."""

    output_dir: str = "runs/k600_stage2"
    data: str = "kinetics600"
    context_frames: int = 5  # pixel frames: the K600 protocol conditions on 5
    context_prob: float = 1.0


if __name__ == "__main__":
    sys.exit(train_main(Kinetics600Stage2))
