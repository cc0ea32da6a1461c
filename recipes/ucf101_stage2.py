"""UCF-101 stage 2: a class-conditional base model over the 101 actions on frozen latents, scored
by the protocol of `ulvideo.evaluate.ucf101`.

    accelerate launch --config_file recipes/configs/multi_gpu.yaml recipes/ucf101_stage2.py \
        --data_root /data/UCF-101 --split_file /data/ucfTrainTestlist/trainlist01.txt \
        --stage1_checkpoint runs/ucf101_stage1/final
    python recipes/ucf101_stage2.py --base_preset tiny --data demo \
        --stage1_checkpoint runs/ucf101_stage1/final   # CPU smoke run, minutes
"""

import sys
from dataclasses import dataclass

from video_defaults import VideoStage2

from ulvideo.train import train_main


@dataclass
class UCF101Stage2(VideoStage2):
    """UCF-101 stage 2: class labels with 10% label dropout for classifier-free guidance."""

    output_dir: str = "runs/ucf101_stage2"
    data: str = "videos"
    class_conditional: bool = True
    label_dropout: float = 0.1


if __name__ == "__main__":
    sys.exit(train_main(UCF101Stage2))
