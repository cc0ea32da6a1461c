"""Estimated GPU memory per process for training each preset, for the README's scale-out table.

    OMP_NUM_THREADS=1 python benchmarks/bench_memory.py --out benchmarks/results/memory_estimates.json

Estimates, not measurements on a GPU:
- parameters are counted on the meta device (ulvideo.models.params_per_part);
- the training state costs, per parameter: fp32 weights 4 B, fp32 gradients 4 B, AdamW's two fp32
  moments 8 B and the trainer's fp32 EMA 4 B. DDP holds all of it on every GPU. FSDP (full shard)
  divides weights, gradients and moments by the number of GPUs; ZeRO-2 divides gradients and
  moments. The EMA stays a full copy on every GPU with every engine (ulvideo.train.ema);
- activations: the bytes autograd saves for the backward pass of one example, counted in fp32 by
  running each network's forward on fake CPU tensors (torch's FakeTensorMode: shapes, no compute),
  where attention goes through the fused SDPA kernel and saves q, k, v, the output and its
  log-sum-exp, as flash attention and xformers do on a GPU (the meta device would decompose it and
  count the attention matrices). bf16 autocast saves most of them in 2 bytes (about half);
  activation checkpointing saves far less. CUDA workspace, the allocator's fragmentation and FSDP's
  gathered unit come on top.
"""

import argparse
from pathlib import Path

import torch
from common import emit, machine
from torch._subclasses.fake_tensor import FakeTensorMode

from ulvideo.models import autoencoder_preset, base_preset, params_per_part
from ulvideo.models.flops import example_forward
from ulvideo.models.presets import AUTOENCODER_PRESETS, BASE_PRESETS
from ulvideo.models.registry import build_part
from ulvideo.nn import set_attention_backend

GIB = 2**30
STATE_BYTES = {"weights": 4, "gradients": 4, "adamw": 8, "ema": 4}  # per parameter, fp32
STAGE_PARTS = {"stage1": ("encoder", "prior", "decoder"), "stage2": ("base",)}


def saved_activation_bytes(config, base_config, part: str, frames: int, resolution: int) -> int:
    """Bytes autograd saves for the backward pass of one example through `part` (fp32, fake CPU
    tensors)."""
    total = 0

    def pack(tensor):
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with FakeTensorMode():
        net = build_part(base_config if part == "base" else config, part)
        net = set_attention_backend(net, "sdpa")
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            example_forward(net, config, part, frames, resolution, resolution)
    return total


def state_gib(params: int, engine: str, gpus: int) -> float:
    """Training state per GPU: weights, gradients, AdamW moments and EMA under `engine`."""
    sharded = {
        "ddp": (),
        "zero2": ("gradients", "adamw"),
        "fsdp": ("weights", "gradients", "adamw"),
    }
    return (
        sum(
            params * b / (gpus if name in sharded[engine] else 1) for name, b in STATE_BYTES.items()
        )
        / GIB
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []
    for preset in AUTOENCODER_PRESETS:
        config = autoencoder_preset(preset, resolution=args.resolution)
        base_config = base_preset(preset, latent_channels=config.latent_channels)
        params = params_per_part(config, base_config)
        for stage, parts in STAGE_PARTS.items():
            activations = sum(
                saved_activation_bytes(config, base_config, p, args.frames, args.resolution)
                for p in parts
            )
            rows.append(
                {
                    "stage": stage,
                    "preset": preset,
                    "params": params[stage],
                    "state_gib_per_gpu": {
                        f"{engine}_{args.gpus}": round(
                            state_gib(params[stage], engine, args.gpus), 2
                        )
                        for engine in ("ddp", "zero2", "fsdp")
                    },
                    "activation_bytes_per_example_fp32": activations,
                    "activations_gib_per_example_fp32": round(activations / GIB, 3),
                }
            )
    assert set(BASE_PRESETS) == set(AUTOENCODER_PRESETS)
    emit(
        {
            "benchmark": "memory_estimates",
            "example": {"frames": args.frames, "resolution": args.resolution},
            "gpus": args.gpus,
            "state_bytes_per_param": STATE_BYTES,
            "rows": rows,
            "machine": machine(),
            "note": __doc__.split("Estimates, not measurements on a GPU:")[1].strip(),
        },
        args.out,
    )


if __name__ == "__main__":
    main()
