"""Parameter counts and training FLOPs, counted the paper's way (UL_METHOD §7).

FLOPs = 2 x multiply-adds of every linear and conv layer plus the two attention matmuls, for one
forward pass of one example, x3 for a training step (forward + backward). They are measured by
running the real modules on the meta device under torch's FlopCounterMode, so the count follows
the implementation exactly and costs no compute.
"""

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..nn import set_attention_backend
from .encoder import check_video_shape
from .presets import ModelConfig
from .registry import build_part

PARTS = ("encoder", "decoder", "prior", "base", "stage1", "stage2")
STAGES = {"stage1": ("encoder", "prior", "decoder"), "stage2": ("base",)}


def count_params(module: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in module.parameters())


def _check_part(part: str) -> None:
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}; valid parts: {', '.join(PARTS)}")


def _forward_flops(config: ModelConfig, part: str, frames: int, height: int, width: int) -> int:
    # One forward pass of one example on the meta device, counted by FlopCounterMode
    cfg = config
    latent = (
        1,
        cfg.latent_channels,
        1 + (frames - 1) // cfg.temporal_downsample,
        height // cfg.spatial_downsample,
        width // cfg.spatial_downsample,
    )
    with torch.device("meta"):
        net = set_attention_backend(build_part(cfg, part), "sdpa")  # countable on meta
        video = torch.zeros(1, cfg.in_channels, frames, height, width)
        z, logsnr = torch.zeros(latent), torch.zeros(1)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        if part == "encoder":
            net(video)
        elif part == "decoder":
            net(video, z, logsnr)
        else:
            net(z, logsnr)
    return counter.get_total_flops()


def training_flops_per_example(
    config: ModelConfig, part: str, frames: int, height: int, width: int
) -> float:
    """Training FLOPs for one example of frames x height x width pixels: 3 x forward FLOPs.

    part: "encoder", "decoder", "prior", "base", "stage1" (encoder + prior + decoder) or "stage2"
    (base only; the latents are precomputed by the frozen encoder).
    """
    _check_part(part)
    check_video_shape((1, config.in_channels, frames, height, width), config, name="clip")
    parts = STAGES.get(part, (part,))
    return 3.0 * sum(_forward_flops(config, p, frames, height, width) for p in parts)


def params_per_part(config: ModelConfig) -> dict[str, int]:
    """Parameter counts of encoder, decoder, prior, base, stage1 and stage2 (built on meta)."""
    with torch.device("meta"):
        counts = {
            p: count_params(build_part(config, p)) for p in ("encoder", "decoder", "prior", "base")
        }
    for stage, parts in STAGES.items():
        counts[stage] = sum(counts[p] for p in parts)
    return counts
