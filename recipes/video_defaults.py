"""What the video recipes share: UL's Kinetics-600 setting of 17 frames at 128x128 and a 4x8x8
causal autoencoder (17 frames = 1 + 4 x 4, 5 latent frames), and the base model trained on its
frozen latents. Each recipe subclasses one of these with its data and what it conditions on.
(Recipes run as scripts, so their folder is on the import path.)
"""

from dataclasses import dataclass, field

from ulvideo.data.buckets import Bucket
from ulvideo.train import TrainConfig


@dataclass
class VideoStage1(TrainConfig):
    """Stage 1 on 17-frame 128x128 clips: encoder, prior and decoder, 4x8x8 causal compression."""

    stage: int = 1
    preset: str = "small"
    model: dict = field(default_factory=lambda: {"spatial_downsample": 8, "temporal_downsample": 4})
    frames: int = 17
    resolution: int = 128
    batch_size: int = 32
    lr: float = 1e-4
    lr_warmup_steps: int = 5000
    # the latent hold lasts 5000 steps and until the decoder reads the latent (a 3 dB swapped-latent
    # gap at an evaluation): scaled down, the warm-up tied to the learning rate's alone lost the
    # latent (docs/TRAINING.md, "The latent warm-up")
    latent_hold_gap_db: float | None = 3.0
    max_steps: int = 300_000
    mixed_precision: str = "bf16"


@dataclass
class VideoStage2(TrainConfig):
    """Stage 2 on 17-frame 128x128 clips: the base model on the frozen stage-1 latents."""

    stage: int = 2
    base_preset: str | None = "medium"
    preset: str | None = None  # the autoencoder comes from --stage1_checkpoint: --preset is refused
    frames: int = 17
    resolution: int = 128
    batch_size: int = 64
    lr: float = 1e-4
    lr_warmup_steps: int = 5000
    max_steps: int = 500_000
    mixed_precision: str = "bf16"


class JointBuckets:
    """Images and videos in one run (docs/JOINT_TRAINING.md): `--data_mix` names a video and an
    image dataset; without `--buckets`, two buckets at the run's resolution: its clips at
    `batch_size`, and images (1 frame, the causal encoder's first latent frame) at `batch_size`
    times the clips' latent frames, so that both steps carry the same number of latent tokens."""

    temporal_downsample = 4  # of the video recipes' 4x8x8 autoencoder

    def bucket_table(self):
        if self.buckets is not None:
            return super().bucket_table()
        latent_frames = 1 + (self.frames - 1) // self.temporal_downsample
        side, batch = self.resolution, self.batch_size
        return (
            Bucket(self.frames, side, side, 1.0, batch),
            Bucket(1, side, side, 1.0, batch * latent_frames),
        )

    def validate(self) -> None:
        if self.data_mix is None and self.latents_dir is None:
            raise ValueError(
                "the joint recipes train on a mixture: give --data_mix, e.g. "
                "'videos:/data/UCF-101=0.7,imagenet:/data/imagenet=0.3' (or 'demo=0.7,demo_images=0.3'), "
                "or stage 2's --latents_dir of shards per bucket (ulvideo encode --data_mix)"
            )
        super().validate()
