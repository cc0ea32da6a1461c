"""ImageNet-512 stage 2: a class-conditional base model on frozen latents (UL §5).

    accelerate launch --config_file recipes/configs/multi_gpu.yaml recipes/imagenet512_stage2.py \
        --data_root /data/imagenet --stage1_checkpoint runs/in512_stage1/final
    python recipes/imagenet512_stage2.py --base_preset tiny --data demo \
        --stage1_checkpoint runs/in512_stage1/final   # CPU smoke run, minutes
"""

import sys
from dataclasses import dataclass

from ulvideo.train import TrainConfig, train_main


@dataclass
class ImageNet512Stage2(TrainConfig):
    """ImageNet-512 stage 2: class labels with 10% label dropout for classifier-free guidance."""

    stage: int = 2
    base_preset: str | None = "medium"
    preset: str | None = None  # the autoencoder comes from --stage1_checkpoint: --preset is refused
    output_dir: str = "runs/in512_stage2"
    data: str = "imagenet"
    frames: int = 1
    resolution: int = 512
    class_conditional: bool = True
    label_dropout: float = 0.1
    batch_size: int = 256
    lr: float = 1e-4
    lr_warmup_steps: int = 5000
    max_steps: int = 500_000
    mixed_precision: str = "bf16"


if __name__ == "__main__":
    sys.exit(train_main(ImageNet512Stage2))
