"""The networks: causal encoder, 3D UViT decoder, prior/base transformer, presets and FLOP counts."""

from .decoder import Decoder
from .encoder import (
    Encoder,
    check_video_shape,
    latent_shape,
    nearest_frame_counts,
    valid_frame_counts,
)
from .flops import (
    PARTS,
    count_params,
    forward_flops,
    gpu_hours,
    params_per_part,
    sampling_flops_per_video,
    training_flops_per_example,
)
from .presets import (
    AUTOENCODER_PRESETS,
    BASE_PRESETS,
    AutoencoderConfig,
    BaseConfig,
    autoencoder_preset,
    base_preset,
)
from .registry import build_base, build_network, build_part, build_prior, register_network
from .transformer import VideoTransformer

__all__ = [
    "PARTS",
    "AUTOENCODER_PRESETS",
    "BASE_PRESETS",
    "Decoder",
    "Encoder",
    "AutoencoderConfig",
    "BaseConfig",
    "VideoTransformer",
    "build_base",
    "build_network",
    "build_part",
    "build_prior",
    "check_video_shape",
    "count_params",
    "forward_flops",
    "gpu_hours",
    "sampling_flops_per_video",
    "autoencoder_preset",
    "base_preset",
    "params_per_part",
    "register_network",
    "training_flops_per_example",
    "valid_frame_counts",
    "latent_shape",
    "nearest_frame_counts",
]
