"""Runtime switches, chosen when a model is loaded or run and never saved with it (as diffusers'
`enable_*` methods): the attention backend and activation checkpointing. A checkpoint trained with
xformers and checkpointing on a GPU cluster loads and samples on a laptop's CPU.

Compilation is a runtime choice too: `accelerate launch --dynamo_backend inductor` for training, or
`torch.compile` on a loaded network.
"""

from torch import nn

from .attention import BACKENDS, xformers_available
from .transformer import SelfAttention


def set_attention_backend(module: nn.Module, backend: str | None) -> nn.Module:
    """Every attention layer of `module` uses `backend` (None = auto); returns `module`."""
    if backend not in (None, *BACKENDS):
        raise ValueError(
            f"unknown attention backend {backend!r}; valid: None, {', '.join(BACKENDS)}"
        )
    if backend == "xformers" and not xformers_available():
        raise RuntimeError(
            "attention backend 'xformers' requested but xformers is not installed; "
            "`pip install ulvideo[xformers]` on a CUDA machine, or use backend='sdpa'"
        )
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
