"""Model configs and presets, one owner per part (UL_METHOD §7).

`AutoencoderConfig` is stage 1 (encoder, decoder, prior, the UL loss settings and the latent
schedule); `BaseConfig` is the stage-2 base model (network, sizes, classes, context, latent scale).
Each is saved beside its own weights. Presets are plain data, as EDM2's: `tiny` trains on a CPU in
minutes on 32x32 or 64x64 video; `small` and `medium` follow the paper's stated sizes for the K600
setting (4x8x8 compression).
"""

import dataclasses
import math
from dataclasses import dataclass

from ..nn.transformer import ATTENTION_MODES

REGULARIZERS = ("ul", "kl")


def _is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


class JSONConfig:
    """to_dict / from_dict for the config dataclasses (tuples saved as lists)."""

    def __post_init__(self):
        for f in dataclasses.fields(self):
            if f.type == tuple[int, ...]:
                setattr(self, f.name, tuple(getattr(self, f.name)))
        self.validate()

    def to_dict(self) -> dict:
        """A JSON-able dict (tuples become lists)."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, d: dict):
        """Inverse of to_dict; unknown keys raise an error that lists the valid fields."""
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - valid)
        if unknown:
            raise ValueError(
                f"unknown {cls.__name__} field(s) {unknown}; valid fields: {sorted(valid)}"
            )
        return cls(**d)


def _check_widths(name: str, widths, depths, head_dim: int) -> None:
    for w in widths:
        if w % head_dim or w % 2:
            raise ValueError(
                f"transformer width {w} must be even and divisible by head_dim={head_dim}"
            )
    if len(widths) != len(depths) or not widths:
        raise ValueError(f"{name} widths and depths need the same, non-zero length")
    if any(d % 2 for d in depths[:-1]):
        raise ValueError(
            f"{name} depths {list(depths)}: every level but the last splits its blocks "
            "evenly before and after the inner levels, so it needs an even count"
        )


@dataclass
class AutoencoderConfig(JSONConfig):
    """Stage 1: all sizes of encoder, decoder and prior, and the UL loss settings."""

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
    # stage-1 prior: a (multi-level) transformer over latent tokens
    prior_widths: tuple[int, ...] = (1024,)
    prior_depths: tuple[int, ...] = (8,)
    prior_dropout: float = 0.0
    prior_network: str = "video_transformer"  # a name in ulvideo.models.registry
    attention: str = "factorised"  # the prior's: "factorised" or "full"
    patch_size: int = 1
    head_dim: int = 64
    mlp_ratio: float = 4.0
    # UL losses and the latent schedule (UL_METHOD §2-§4)
    logsnr_latent: float = 5.0
    logsnr_min_latent: float = -15.0
    loss_factor: float = 1.5
    decoder_bias: float = 0.0
    # [ours] the latent regulariser: "ul" (the noisy latent and its diffusion prior) or "kl" (a
    # KL-regularised Gaussian encoder, Stable-Diffusion style, for comparison: the encoder also
    # predicts a log-variance and the rate is kl_weight x KL(q(z|x) || N(0, I)); no prior)
    regularizer: str = "ul"
    kl_weight: float = 1.0  # beta of the KL arm, in nats of KL per nat of decoder loss
    # 1 / the std of the clean latents, measured by stage 1 when it exports (diffusers'
    # scaling_factor; ulvideo.latent_scale); None until then
    latent_scale: float | None = None

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
        most = max(spatial_steps, temporal_steps) + 1  # each transition takes a 2x step
        if not temporal_steps + 1 <= levels <= most:
            raise ValueError(
                f"decoder_channels has {levels} levels; with {td}x{sd}x{sd} compression it needs "
                f"between {temporal_steps + 1} and {most} levels"
            )
        for name in ("attention", "decoder_attention"):
            if getattr(self, name) not in ATTENTION_MODES:
                raise ValueError(
                    f"{name} must be one of {ATTENTION_MODES}, got {getattr(self, name)!r}"
                )
        _check_widths("prior", self.prior_widths, self.prior_depths, self.head_dim)
        _check_widths("decoder", (self.decoder_width,), (self.decoder_depth,), self.head_dim)
        if not _is_power_of_two(self.patch_size):
            raise ValueError(f"patch_size must be a power of two, got {self.patch_size}")
        if self.regularizer not in REGULARIZERS:
            raise ValueError(f"regularizer must be one of {REGULARIZERS}, got {self.regularizer!r}")
        if not self.kl_weight >= 0:
            raise ValueError(
                f"kl_weight must be >= 0 (0: a plain autoencoder), got {self.kl_weight}"
            )
        if self.latent_scale is not None and not self.latent_scale > 0:
            raise ValueError(f"latent_scale must be > 0 (or None), got {self.latent_scale}")


@dataclass
class BaseConfig(JSONConfig):
    """Stage 2: the base model over the autoencoder's latents (UL_METHOD §5)."""

    latent_channels: int = 8  # set from the autoencoder it is trained on
    network: str = "video_transformer"  # a name in ulvideo.models.registry
    widths: tuple[int, ...] = (512, 1024)
    depths: tuple[int, ...] = (6, 16)
    dropout: float = 0.1
    attention: str = "factorised"  # "factorised" or "full"
    patch_size: int = 1  # [paper] patching is detrimental to the base model
    head_dim: int = 64
    mlp_ratio: float = 4.0
    num_classes: int = 0  # 0 = unconditional; else labels in [0, num_classes), num_classes = null
    context: bool = True  # learns a "given" embedding for clean context frames (frame prediction)
    # 1 / the std of the latents it models: stage 2 copies the stage-1 export's; it sets the loss
    # weight's bias and the centre of the training draws of lambda (UL latents) or multiplies
    # the latents (KL), as ulvideo.latent_scale.LatentScaling decides
    latent_scale: float = 1.0

    def validate(self) -> None:
        """Raise a ValueError naming the field and the fix for any inconsistent size."""
        if self.attention not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {ATTENTION_MODES}, got {self.attention!r}")
        _check_widths("base", self.widths, self.depths, self.head_dim)
        if self.num_classes < 0:
            raise ValueError(
                f"num_classes must be >= 0 (0 = unconditional), got {self.num_classes}"
            )
        if not _is_power_of_two(self.patch_size):
            raise ValueError(f"patch_size must be a power of two, got {self.patch_size}")
        if not self.latent_scale > 0:
            raise ValueError(f"latent_scale must be > 0, got {self.latent_scale}")


# Plain data: a preset names the fields that differ from the dataclass defaults.
AUTOENCODER_PRESETS: dict[str, dict] = {
    # CPU-trainable in minutes: 17x32x32 clips -> 8 x 5x4x4 latents
    "tiny": dict(
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
        head_dim=32,
    ),
    # The paper's stated sizes (UL_METHOD §7), K600: 4x8x8 compression of 128x128
    "small": dict(),
    # [ours] the paper gives only one size per part; medium deepens the prior
    "medium": dict(prior_widths=(1024,), prior_depths=(12,)),
}
BASE_PRESETS: dict[str, dict] = {
    "tiny": dict(widths=(64, 128), depths=(2, 2), dropout=0.0, head_dim=32),
    # the paper's two-level base ViT: widths [512, 1024], blocks [6, 16], dropout 0.1
    "small": dict(),
    # [ours] a wider, deeper base model
    "medium": dict(widths=(768, 1536), depths=(6, 24)),
}


def _preset(presets: dict, cls, kind: str, name: str, overrides: dict):
    if name not in presets:
        raise ValueError(f"unknown {kind} preset {name!r}; valid presets: {sorted(presets)}")
    return cls.from_dict({**presets[name], **overrides})


def autoencoder_preset(name: str, **overrides) -> AutoencoderConfig:
    """A fresh AutoencoderConfig of preset `name` with `overrides` applied (validated)."""
    return _preset(AUTOENCODER_PRESETS, AutoencoderConfig, "autoencoder", name, overrides)


def base_preset(name: str, **overrides) -> BaseConfig:
    """A fresh BaseConfig of preset `name` with `overrides` applied (validated)."""
    return _preset(BASE_PRESETS, BaseConfig, "base", name, overrides)
