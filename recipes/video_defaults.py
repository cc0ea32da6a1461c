"""What the video recipes share: UL's Kinetics-600 setting of 17 frames at 128x128 and a 4x8x8
causal autoencoder (17 frames = 1 + 4 x 4, 5 latent frames), and the base model trained on its
frozen latents. Each recipe subclasses one of these with its data and what it conditions on.
(Recipes run as scripts, so their folder is on the import path.)
"""

from dataclasses import dataclass, field

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
    warmup_steps: int = 5000
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
    warmup_steps: int = 5000
    max_steps: int = 500_000
    mixed_precision: str = "bf16"
