"""Joint image-video stage 2 (issue 35, docs/JOINT_TRAINING.md): the class-conditional base model
on the frozen latents of clips and images (the mixture's label spaces side by side: UCF-101's 101
actions, then ImageNet's 1000 classes; unlabelled sources train as the null class).

    accelerate launch --config_file recipes/configs/multi_gpu.yaml recipes/joint_stage2.py \
        --data_mix 'videos:/data/UCF-101=0.7,imagenet:/data/imagenet=0.3' \
        --split_file /data/ucfTrainTestlist/trainlist01.txt --stage1_checkpoint runs/joint_stage1/final
    python recipes/joint_stage2.py --base_preset tiny --data_mix 'demo=0.7,demo_images=0.3' \
        --stage1_checkpoint runs/joint_stage1/final   # CPU smoke run, minutes
"""

import sys
from dataclasses import dataclass

from video_defaults import JointBuckets, VideoStage2

from ulvideo.train import train_main


@dataclass
class JointStage2(JointBuckets, VideoStage2):
    """Stage 2 on clips and images: class labels with 10% label dropout for guidance."""

    output_dir: str = "runs/joint_stage2"
    class_conditional: bool = True
    label_dropout: float = 0.1


if __name__ == "__main__":
    sys.exit(train_main(JointStage2))
