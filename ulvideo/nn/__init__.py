"""Building blocks: attention (xformers | SDPA), causal 3D convs, residual blocks, AdaLN, embeddings.

Nothing here imports ulvideo.models.
"""

from .attention import (
    BACKENDS,
    attention,
    check_backend,
    naive_attention,
    resolve_backend,
    xformers_available,
)
from .conv import Conv3d, StreamCache, patchify, unpatchify
from .embedding import LogSNREmbedding, fourier_features, sincos_1d, sincos_3d
from .norm import GroupNorm3d, frame_group_norm, modulate, modulation_linear
from .resblock import Downsample3d, ResBlock3d, Upsample3d
from .runtime import compile_blocks, enable_activation_checkpointing, set_attention_backend
from .transformer import ATTENTION_MODES, MLP, SelfAttention, TransformerBlock, run_blocks

__all__ = [
    "ATTENTION_MODES",
    "BACKENDS",
    "check_backend",
    "MLP",
    "Conv3d",
    "Downsample3d",
    "GroupNorm3d",
    "LogSNREmbedding",
    "ResBlock3d",
    "SelfAttention",
    "StreamCache",
    "TransformerBlock",
    "Upsample3d",
    "attention",
    "compile_blocks",
    "enable_activation_checkpointing",
    "fourier_features",
    "frame_group_norm",
    "modulate",
    "naive_attention",
    "patchify",
    "resolve_backend",
    "run_blocks",
    "set_attention_backend",
    "sincos_1d",
    "sincos_3d",
    "unpatchify",
    "xformers_available",
    "modulation_linear",
]
