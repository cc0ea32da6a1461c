"""Runtime switches, chosen when a model is loaded or run and never saved with it (as diffusers'
`enable_*` methods): the attention backend, activation checkpointing and compilation. A checkpoint
trained with xformers, checkpointing and torch.compile on a GPU cluster loads and samples on a
laptop's CPU.
"""

import torch
from torch import nn

from .attention import check_backend
from .resblock import ResBlock3d
from .transformer import SelfAttention, TransformerBlock


def set_attention_backend(module: nn.Module, backend: str | None) -> nn.Module:
    """Every attention layer of `module` uses `backend` (None = auto); returns `module`."""
    check_backend(backend)
    for layer in module.modules():
        if isinstance(layer, SelfAttention):
            layer.backend = backend
    return module


def enable_activation_checkpointing(module: nn.Module, enabled: bool = True) -> nn.Module:
    """Recompute transformer blocks in the backward pass (less memory, ~1/3 more compute) in
    every network of `module` that supports it (a `checkpointing` attribute); returns `module`."""
    for network in module.modules():
        if hasattr(network, "checkpointing"):
            network.checkpointing = enabled
    return module


def compile_blocks(module: nn.Module, backend: str = "inductor") -> nn.Module:
    """torch.compile every transformer block and residual block of `module` in place (regional
    compilation): identical blocks share one compiled forward per input shape, so compiling costs
    seconds where the whole model would cost minutes. Returns `module`; its state dict is unchanged.
    """
    # a stage-1 model runs blocks at up to ~16 input shapes, more than dynamo's default limit of 8
    # recompilations per function
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    for block in module.modules():
        if isinstance(block, (TransformerBlock, ResBlock3d)):
            block.compile(dynamic=False, backend=backend)
    return module
