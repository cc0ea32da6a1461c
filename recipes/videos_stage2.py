"""Any folder of videos, stage 2: an unconditional base model on frozen latents (add
`--class_conditional true` to condition on the class folders or list-file labels).

    accelerate launch --config_file recipes/configs/multi_gpu.yaml recipes/videos_stage2.py \
        --data_root /data/my_videos --stage1_checkpoint runs/my_videos_stage1/final
    python recipes/videos_stage2.py --base_preset tiny --data demo \
        --stage1_checkpoint runs/videos_stage1/final   # CPU smoke run, minutes
"""

import sys
from dataclasses import dataclass

from video_defaults import VideoStage2

from ulvideo.train import train_main


@dataclass
class VideosStage2(VideoStage2):
    """Stage 2 on a folder of videos: unconditional generation of 17-frame 128x128 clips."""

    output_dir: str = "runs/videos_stage2"
    data: str = "videos"


if __name__ == "__main__":
    sys.exit(train_main(VideosStage2))
