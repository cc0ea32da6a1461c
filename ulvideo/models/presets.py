"""Model presets: one dataclass holds every size of encoder, decoder, prior and base (UL_METHOD §7).

`small` and `medium` follow the paper's stated sizes for the K600 setting (4x8x8 compression);
`tiny` trains on CPU in minutes on 32x32 or 64x64 video.
"""

import dataclasses
import math
from dataclasses import dataclass

from ..nn.transformer import ATTENTION_MODES


def _is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


@dataclass
class ModelConfig:
    """All sizes and UL loss settings of a model. JSON-able via to_dict / from_dict."""

    # data and latent grid
    in_channels: int = 3
    latent_channels: int = 8
    spatial_downsample: int = 8
    temporal_downsample: int = 4
    resolution: int = 128  # pixel side length, shifts the decoder's log-SNR schedule
    # encoder: 2x2 patching, then causal 3D ResNet stages
    encoder_channels: tuple[int, ...] = (128, 256, 512, 512)
    encoder_blocks: tuple[int, ...] = (2, 2, 2, 3)
    # decoder: 3D UViT (conv down stages, transformer at the latent grid, conv up stages)
    decoder_channels: tuple[int, ...] = (128, 256, 512)
    decoder_blocks: tuple[int, ...] = (2, 2, 2)
    decoder_width: int = 1024
    decoder_depth: int = 8
    decoder_attention: str = "full"
    decoder_dropout: float = 0.1
    # stage-1 prior and stage-2 base: (multi-level) transformers over latent tokens
    prior_widths: tuple[int, ...] = (1024,)
    prior_depths: tuple[int, ...] = (8,)
    prior_dropout: float = 0.0
    base_widths: tuple[int, ...] = (512, 1024)
    base_depths: tuple[int, ...] = (6, 16)
    base_dropout: float = 0.1
    prior_network: str = "video_transformer"  # a name in ulvideo.models.registry
    base_network: str = "video_transformer"
    attention: str = "factorised"  # prior and base: "factorised" or "full"
    patch_size: int = 1
    head_dim: int = 64
    mlp_ratio: float = 4.0
    num_classes: int = 0  # 0 = unconditional; else labels in [0, num_classes), num_classes = null
    # UL losses (UL_METHOD §2-§5)
    logsnr_latent: float = 5.0
    logsnr_min_latent: float = -15.0
    loss_factor: float = 1.5
    decoder_bias: float = 0.0
    base_bias: float = 0.0

    def __post_init__(self):
        for f in dataclasses.fields(self):
            if f.type == tuple[int, ...]:
                setattr(self, f.name, tuple(getattr(self, f.name)))
        self.validate()

    def validate(self) -> None:
        """Raise a ValueError naming the field and the fix for any inconsistent size."""
        sd, td = self.spatial_downsample, self.temporal_downsample
        if not (_is_power_of_two(sd) and sd >= 2):
            raise ValueError(f"spatial_downsample must be a power of two >= 2 (8 or 16), got {sd}")
        if td not in (1, 2, 4):
            raise ValueError(f"temporal_downsample must be 1, 2 or 4, got {td}")
        spatial_steps, temporal_steps = int(math.log2(sd)) - 1, int(math.log2(td))
        transitions = len(self.encoder_channels) - 1
        if len(self.encoder_blocks) != len(self.encoder_channels):
            raise ValueError("encoder_blocks needs one entry per encoder_channels entry")
        if max(spatial_steps, temporal_steps) > transitions:
            raise ValueError(
                f"the encoder needs {max(spatial_steps, temporal_steps) + 1} stages for {td}x{sd}x{sd} "
                f"compression (2x2 patching + one stage per 2x), got "
                f"encoder_channels={list(self.encoder_channels)}"
            )
        levels = len(self.decoder_channels)
        if len(self.decoder_blocks) != levels:
            raise ValueError("decoder_blocks needs one entry per decoder_channels entry")
        if levels - 1 > spatial_steps or temporal_steps > levels - 1:
            raise ValueError(
                f"decoder_channels has {levels} levels; with {td}x{sd}x{sd} compression it needs "
                f"between {temporal_steps + 1} and {spatial_steps + 1} levels"
            )
        for name in ("attention", "decoder_attention"):
            if getattr(self, name) not in ATTENTION_MODES:
                raise ValueError(
                    f"{name} must be one of {ATTENTION_MODES}, got {getattr(self, name)!r}"
                )
        for w in (self.decoder_width, *self.prior_widths, *self.base_widths):
            if w % self.head_dim or w % 2:
                raise ValueError(
                    f"transformer width {w} must be even and divisible by head_dim={self.head_dim}"
                )
        for prefix in ("prior", "base"):
            widths, depths = getattr(self, f"{prefix}_widths"), getattr(self, f"{prefix}_depths")
            if len(widths) != len(depths) or not widths:
                raise ValueError(
                    f"{prefix}_widths and {prefix}_depths need the same, non-zero length"
                )
            if any(d % 2 for d in depths[:-1]):
                raise ValueError(
                    f"{prefix}_depths {list(depths)}: every level but the last splits its blocks "
                    "evenly before and after the inner levels, so it needs an even count"
                )
        if self.num_classes < 0:
            raise ValueError(
                f"num_classes must be >= 0 (0 = unconditional), got {self.num_classes}"
            )
        if not _is_power_of_two(self.patch_size):
            raise ValueError(f"patch_size must be a power of two, got {self.patch_size}")

    def to_dict(self) -> dict:
        """A JSON-able dict (tuples become lists)."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """Inverse of to_dict; unknown keys raise an error that lists the valid fields."""
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - valid)
        if unknown:
            raise ValueError(
                f"unknown ModelConfig field(s) {unknown}; valid fields: {sorted(valid)}"
            )
        return cls(**d)


PRESETS: dict[str, ModelConfig] = {
    # CPU-trainable in minutes: 17x32x32 clips -> 8 x 5x4x4 latents
    "tiny": ModelConfig(
        latent_channels=8,
        resolution=32,
        encoder_channels=(32, 48, 64, 64),  # four stages: 8x or 16x spatial (ImageNet recipe)
        encoder_blocks=(1, 1, 1, 1),
        decoder_channels=(32, 48, 64),
        decoder_blocks=(1, 1, 1),
        decoder_width=64,
        decoder_depth=2,
        decoder_dropout=0.0,
        prior_widths=(64,),
        prior_depths=(2,),
        base_widths=(64, 128),
        base_depths=(2, 2),
        base_dropout=0.0,
        head_dim=32,
    ),
    # The paper's stated sizes (UL_METHOD §7), K600: 4x8x8 compression of 128x128
    "small": ModelConfig(),
    # [ours] the paper gives only one size per part; medium widens the base model and prior
    "medium": ModelConfig(
        prior_widths=(1024,),
        prior_depths=(12,),
        base_widths=(768, 1536),
        base_depths=(6, 24),
    ),
}


def get_preset(name: str, **overrides) -> ModelConfig:
    """A fresh copy of preset `name` with `overrides` applied (validated)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid presets: {sorted(PRESETS)}")
    return ModelConfig.from_dict({**PRESETS[name].to_dict(), **overrides})
