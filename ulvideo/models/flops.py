"""Parameter counts, training FLOPs and sampling FLOPs, counted the paper's way (UL_METHOD §7).

FLOPs = 2 x multiply-adds of every linear and conv layer plus the two attention matmuls, for one
forward pass of one example, x3 for a training step (forward + backward). They are measured by
running the real modules on the meta device under torch's FlopCounterMode, so the count follows
the implementation exactly and costs no compute.
"""

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..nn import set_attention_backend
from .encoder import check_video_shape, latent_shape
from .presets import AutoencoderConfig, BaseConfig
from .registry import build_part

PARTS = ("encoder", "decoder", "prior", "base", "stage1", "stage2")
STAGES = {"stage1": ("encoder", "prior", "decoder"), "stage2": ("base",)}


def count_params(module: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in module.parameters())


def _check_part(part: str) -> None:
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}; valid parts: {', '.join(PARTS)}")


def _members(config: AutoencoderConfig, part: str) -> tuple[str, ...]:
    # the networks a part or stage counts; the KL arm has no prior
    members = STAGES.get(part, (part,))
    if config.regularizer == "kl":
        if part == "prior":
            raise ValueError("the KL arm (regularizer 'kl') has no prior")
        members = tuple(p for p in members if p != "prior")
    return members


def example_forward(
    net: nn.Module, config: AutoencoderConfig, part: str, frames: int, height: int, width: int
):
    """One example of zeros through `part` (encoder: the video; decoder: the video and its latent;
    prior or base model: the latent; log-SNR 0), on the device of net's parameters and under any
    tensor mode in force (meta, fake): the shared forward of the FLOP and memory counts."""
    device = next(net.parameters()).device
    latent = (1, *latent_shape(config, frames, height, width))
    video = torch.zeros(1, config.in_channels, frames, height, width, device=device)
    z, logsnr = torch.zeros(latent, device=device), torch.zeros(1, device=device)
    if part == "encoder":
        return net(video)
    if part == "decoder":
        return net(video, z, logsnr)
    return net(z, logsnr)


def _forward_flops(
    config: AutoencoderConfig,
    base_config: BaseConfig | None,
    part: str,
    frames: int,
    height: int,
    width: int,
) -> int:
    # One forward pass of one example on the meta device, counted by FlopCounterMode
    with torch.device("meta"):
        built = build_part(base_config if part == "base" else config, part)
        net = set_attention_backend(built, "sdpa")  # countable on meta
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        example_forward(net, config, part, frames, height, width)
    return counter.get_total_flops()


def _needs_base(part: str, base_config: BaseConfig | None) -> None:
    _check_part(part)
    if "base" in STAGES.get(part, (part,)) and base_config is None:
        raise ValueError(f"part {part!r} is the base model: pass its base_config")


def forward_flops(
    config: AutoencoderConfig,
    part: str,
    frames: int,
    height: int,
    width: int,
    base_config: BaseConfig | None = None,
) -> float:
    """FLOPs of one forward pass of `part` (as training_flops_per_example's) on one example of
    frames x height x width pixels: one network evaluation of a sampler."""
    _needs_base(part, base_config)
    check_video_shape((1, config.in_channels, frames, height, width), config, name="clip")
    parts = _members(config, part)
    return float(sum(_forward_flops(config, base_config, p, frames, height, width) for p in parts))


def training_flops_per_example(
    config: AutoencoderConfig,
    part: str,
    frames: int,
    height: int,
    width: int,
    base_config: BaseConfig | None = None,
) -> float:
    """Training FLOPs for one example of frames x height x width pixels: 3 x forward FLOPs.

    part: "encoder", "decoder", "prior", "base", "stage1" (encoder + prior + decoder; the KL arm
    has no prior) or "stage2"
    (base only; the latents are precomputed by the frozen encoder). `config` (the autoencoder)
    sets the latent grid; the base model's sizes come from `base_config`.
    """
    return 3.0 * forward_flops(config, part, frames, height, width, base_config)


def sampling_flops_per_video(
    config: AutoencoderConfig,
    frames: int,
    height: int,
    width: int,
    base_steps: int,
    decoder_steps: int,
    method: str = "ddpm",
    cfg_scale: float = 1.0,
    base_config: BaseConfig | None = None,
) -> dict:
    """FLOPs of UL Algorithm 2 for one video: the base model's network evaluations (NFE) down to
    z0, doubled under classifier-free guidance (cfg_scale != 1: a conditional and an
    unconditional pass), then the decoder's to the pixels (ulvideo.diffusion.nfe: Heun's 2 a
    step, less the last step to the data). Without a `base_config` only the decoder is counted.
    Encoding context frames (frame prediction) is not counted: one encoder pass, under 1% of a
    decoder pass per step at K600 scale."""
    from ..diffusion import nfe

    decoder_nfe = nfe(method, decoder_steps, to_the_data=True)
    decoder = decoder_nfe * forward_flops(config, "decoder", frames, height, width)
    out = {"method": method, "decoder_nfe": decoder_nfe, "decoder_flops": decoder}
    if base_config is not None:
        base_nfe = nfe(method, base_steps, to_the_data=False) * (1 if cfg_scale == 1.0 else 2)
        base = base_nfe * forward_flops(config, "base", frames, height, width, base_config)
        out.update(base_nfe=base_nfe, base_flops=base)
    out["flops"] = decoder + out.get("base_flops", 0.0)
    return out


def gpu_hours(flops: float, mfu: float, peak_tflops: float) -> float:
    """Hours of one accelerator running `flops` at `mfu` of its `peak_tflops` (TFLOP/s)."""
    if not 0 < mfu <= 1 or peak_tflops <= 0:
        raise ValueError(f"need 0 < mfu <= 1 and peak_tflops > 0, got {mfu} and {peak_tflops}")
    return flops / (mfu * peak_tflops * 1e12) / 3600


def params_per_part(
    config: AutoencoderConfig, base_config: BaseConfig | None = None
) -> dict[str, int]:
    """Parameter counts of encoder, decoder, prior and stage1, and with a `base_config` of base
    and stage2 (built on meta)."""
    parts = _members(config, "stage1") + (("base",) if base_config is not None else ())
    with torch.device("meta"):
        counts = {
            p: count_params(build_part(base_config if p == "base" else config, p)) for p in parts
        }
    for stage in STAGES:
        members = _members(config, stage)
        if all(p in counts for p in members):
            counts[stage] = sum(counts[p] for p in members)
    return counts
