"""Joint image-video stage 1 (issue 35, docs/JOINT_TRAINING.md): UCF-101 (or Kinetics-600)
17-frame clips and ImageNet images at the same 128x128, 70% of the steps on clips and 30% on
images, each step one shape bucket (clips at batch_size, images at 5x it: equal latent tokens).

    accelerate launch --config_file recipes/configs/multi_gpu.yaml recipes/joint_stage1.py \
        --data_mix 'videos:/data/UCF-101=0.7,imagenet:/data/imagenet=0.3' \
        --split_file /data/ucfTrainTestlist/trainlist01.txt
    python recipes/joint_stage1.py --preset tiny --data_mix 'demo=0.7,demo_images=0.3'  # CPU, minutes
"""

import sys
from dataclasses import dataclass

from video_defaults import JointBuckets, VideoStage1

from ulvideo.train import train_main


@dataclass
class JointStage1(JointBuckets, VideoStage1):
    """Stage 1 on clips and images: 17x128x128 and 1x128x128 buckets, 4x8x8 causal compression."""

    output_dir: str = "runs/joint_stage1"


if __name__ == "__main__":
    sys.exit(train_main(JointStage1))
