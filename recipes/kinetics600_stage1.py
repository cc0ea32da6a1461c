"""Kinetics-600 stage 1: encoder, prior and decoder trained jointly (UL §2-§4).

    accelerate launch --config_file recipes/configs/multi_gpu.yaml recipes/kinetics600_stage1.py \
        --data_root /data/kinetics600 --output_dir runs/k600_stage1
    python recipes/kinetics600_stage1.py --preset tiny --data demo   # CPU smoke run, minutes
"""

import sys
from dataclasses import dataclass, field

from ulvideo.train import TrainConfig, train_main


@dataclass
class Kinetics600Stage1(TrainConfig):
    """K600 stage 1: 17 frames at 128x128, 4x8x8 causal compression."""

    stage: int = 1
    preset: str = "small"
    model: dict = field(default_factory=lambda: {"spatial_downsample": 8, "temporal_downsample": 4})
    output_dir: str = "runs/k600_stage1"
    data: str = "kinetics600"
    frames: int = 17
    resolution: int = 128
    batch_size: int = 32
    lr: float = 1e-4
    warmup_steps: int = 5000
    max_steps: int = 300_000
    mixed_precision: str = "bf16"


if __name__ == "__main__":
    sys.exit(train_main(Kinetics600Stage1))
