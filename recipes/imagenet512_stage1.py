"""ImageNet-512 stage 1: images as one-frame videos, 16x compression, 32 latent channels (UL §7).

    accelerate launch --config_file recipes/configs/multi_gpu.yaml recipes/imagenet512_stage1.py \
        --data_root /data/imagenet --output_dir runs/in512_stage1
    python recipes/imagenet512_stage1.py --preset tiny --data demo   # CPU smoke run, minutes
"""

import sys
from dataclasses import dataclass, field

from ulvideo.train import TrainConfig, train_main


@dataclass
class ImageNet512Stage1(TrainConfig):
    """ImageNet-512 stage 1 at loss factor 1.5 (the paper's best gFID setting)."""

    stage: int = 1
    preset: str = "small"
    model: dict = field(
        default_factory=lambda: {
            "spatial_downsample": 16,
            "latent_channels": 32,
            "loss_factor": 1.5,
        }
    )
    output_dir: str = "runs/in512_stage1"
    data: str = "imagenet"
    frames: int = 1
    resolution: int = 512
    batch_size: int = 32
    lr: float = 1e-4
    lr_warmup_steps: int = 5000
    latent_hold_gap_db: float | None = 3.0  # as the video recipes (recipes/video_defaults.py)
    max_steps: int = 300_000
    mixed_precision: str = "bf16"


if __name__ == "__main__":
    sys.exit(train_main(ImageNet512Stage1))
