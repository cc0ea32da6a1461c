"""Training-step throughput for each preset and stage: examples/s, tokens/s, peak memory and MFU.
Prints JSON.

    python benchmarks/bench_train_step.py --device cpu --presets tiny --dtype fp32 bf16
    python benchmarks/bench_train_step.py --device cuda --presets small medium --stages 1 2 \\
        --compile off on --dtype bf16 --peak_tflops 989 --out gpu_train_step.json
    python benchmarks/bench_train_step.py --device cpu --threads 1 --stages 1 \\
        --parts all encoder prior decoder --compile off on --peak_tflops matmul

`--parts` adds stage 1's networks one at a time (each on its stage-1 inputs, the mean square of its
output as the loss), so the stage-1 bottleneck shows; `--peak_tflops matmul` takes the device's
fastest fp32 (or bf16) matmul rate as the peak where no datasheet figure applies (a CPU).

A step is what the trainer does per batch: forward under autocast, backward, gradient clipping,
AdamW. Stage 1 is UnifiedLatents.stage1_loss (encoder + prior + decoder) on pixel clips; stage 2
is the sigmoid-weighted base-model loss on latents. Inputs are random: the cost does not depend
on the values. MFU = training FLOPs per example (ulvideo.models.training_flops_per_example: the
paper's counting, linear layers and convs plus the attention matmuls, x3 for forward + backward)
x examples/s / the device's peak FLOP/s (--peak_tflops; 989 for a dense-bf16 H100 SXM).
`--compile on` compiles each transformer block and residual block (ulvideo.nn.compile_blocks,
regional compilation: the repeated blocks share compiled code, so compiling takes seconds rather
than minutes), as the trainer's --compile does.
"""

import argparse
import dataclasses
import gc
import itertools
import math
import time

import torch
from common import (
    MEMORY_NOTE,
    add_common_arguments,
    autocast,
    emit,
    machine,
    measure,
    setup,
    write_json,
)

from ulvideo.diffusion import ShiftedCosine, base_loss
from ulvideo.models import (
    Encoder,
    autoencoder_preset,
    base_preset,
    build_base,
    count_params,
    training_flops_per_example,
)
from ulvideo.nn import compile_blocks, set_attention_backend
from ulvideo.ul import UnifiedLatents

CLIPS = {"tiny": (17, 32)}  # frames, resolution; every other preset: the K600 clip, 17 x 128 x 128
BATCH = {("cpu", 1): 4, ("cpu", 2): 16, ("cuda", 1): 8, ("cuda", 2): 32}
PARTS = ("encoder", "prior", "decoder")


@dataclasses.dataclass
class Setting:
    preset: str
    stage: int
    dtype: str
    compile: str  # "off" or "on"
    batch_size: int
    frames: int
    resolution: int
    part: str = "all"  # "all" (the stage's step), or one stage-1 network: PARTS


def build(setting: Setting, device: torch.device, backend: str | None):
    """(network, loss function, latent tokens per example) for one setting, inputs on `device`."""
    ae_config = autoencoder_preset(setting.preset, resolution=setting.resolution)
    base_config = base_preset(setting.preset, latent_channels=ae_config.latent_channels)
    b, side = setting.batch_size, setting.resolution
    with torch.device("meta"):  # the encoder's output shape, at no cost
        latent_shape = Encoder(ae_config)(torch.zeros(1, 3, setting.frames, side, side)).shape[1:]
    video = (torch.rand(b, 3, setting.frames, side, side) * 2 - 1).to(device)
    z, logsnr = torch.randn(b, *latent_shape, device=device), torch.randn(b, device=device)
    if setting.part in PARTS:  # one network of stage 1 on its stage-1 inputs, sum of squares out
        network = getattr(UnifiedLatents(ae_config), setting.part).to(device)
        inputs = {"encoder": (video,), "prior": (z, logsnr), "decoder": (video, z, logsnr)}

        def loss_fn():
            return network(*inputs[setting.part]).square().mean()
    elif setting.stage == 1:
        network = UnifiedLatents(ae_config).to(device)

        def loss_fn():
            return network.stage1_loss(video)["loss"]
    else:
        network = build_base(base_config).to(device)
        z_clean = torch.randn(b, *latent_shape, device=device)  # unit variance: shift and bias 0
        schedule = ShiftedCosine(0.0, ae_config.logsnr_latent, ae_config.logsnr_min_latent)

        def loss_fn():
            return base_loss(network, z_clean, schedule, bias=0.0).mean()

    set_attention_backend(network, backend)  # a runtime switch, not a model setting
    if setting.compile == "on":
        compile_blocks(network)
    return network, loss_fn, math.prod(latent_shape[1:]), ae_config, base_config


def run_setting(setting: Setting, device: torch.device, args) -> dict:
    """Build, warm up and time one setting; the measured numbers as a dict."""
    network, loss_fn, tokens, ae_config, base_config = build(
        setting, device, args.attention_backend
    )
    params = [p for p in network.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=True)  # the trainer's optimiser
    losses = []  # (loss, gradient norm) of every step, checked for finiteness at the end

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, setting.dtype):
            loss = loss_fn()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(torch.stack([loss.detach().float(), grad_norm.float()]))

    timing = measure(step, device, args.warmup, args.steps)
    part = setting.part if setting.part in PARTS else f"stage{setting.stage}"
    flops = training_flops_per_example(
        ae_config,
        part,
        setting.frames,
        setting.resolution,
        setting.resolution,
        base_config=base_config,
    )
    examples_per_s = setting.batch_size / timing.median_s
    result = {
        **dataclasses.asdict(setting),
        "attention_backend": args.attention_backend or "auto",
        "latent_tokens_per_example": tokens,
        "params": count_params(network),
        "training_flops_per_example": flops,
        "step_s": timing.to_dict(),
        "examples_per_s": examples_per_s,
        "tokens_per_s": examples_per_s * tokens,
        "achieved_tflops": flops * examples_per_s / 1e12,
        "mfu": None,
        "last_loss": float(losses[-1][0]),
        "last_grad_norm": float(losses[-1][1]),
    }
    if args.peak_tflops:
        result["mfu"] = result["achieved_tflops"] / args.peak_tflops
    if not torch.isfinite(torch.stack(losses)).all():
        raise RuntimeError(f"{setting}: non-finite loss or gradient norm during the benchmark")
    return result


def run_with_fallback(setting: Setting, device: torch.device, args) -> dict:
    """run_setting; on a CUDA out-of-memory error, halve the batch and try again."""
    requested = setting.batch_size
    while True:
        try:
            return {**run_setting(setting, device, args), "batch_size_requested": requested}
        except torch.OutOfMemoryError:
            if setting.batch_size == 1:
                return {**dataclasses.asdict(setting), "error": "out of memory at batch size 1"}
            setting = dataclasses.replace(setting, batch_size=setting.batch_size // 2)
        finally:
            gc.collect()  # free the failed attempt's model before the next one is built
            if device.type == "cuda":
                torch.cuda.empty_cache()


def best_per_preset_stage(results: list[dict]) -> list[dict]:
    """The fastest setting (examples/s) of each preset, stage and part."""
    best = {}
    for r in results:
        key = (r["preset"], r["stage"], r["part"])
        if "examples_per_s" in r and r["examples_per_s"] > best.get(key, {}).get(
            "examples_per_s", 0
        ):
            best[key] = r
    keys = ("preset", "stage", "part", "dtype", "compile", "batch_size", "examples_per_s", "mfu")
    return [{k: r[k] for k in keys} for r in best.values()]


def peak_argument(text: str) -> float | str:
    if text == "matmul":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected TFLOP/s or 'matmul', got {text!r}") from None


def matmul_tflops(device: torch.device, dtype: str) -> float:
    """TFLOP/s of a 2048 x 2048 x 2048 matmul on `device`, the fastest of 10 (the least disturbed
    by other processes): a measured peak for MFU where the datasheet's is unknown (a CPU). It is
    measured at the start and the end of the run, and the faster of the two is the peak."""
    a, b = torch.randn(2, 2048, 2048, device=device).unbind(0)
    with autocast(device, dtype):
        timing = measure(lambda: a @ b, device, warmup=1, repeats=10)
    return 2 * 2048**3 / min(timing.times_s) / 1e12


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, warmup=2, repeats=5)
    parser.add_argument("--presets", nargs="+", default=["tiny"])
    parser.add_argument("--stages", type=int, nargs="+", choices=[1, 2], default=[1, 2])
    parser.add_argument("--dtype", nargs="+", choices=["fp32", "bf16"], default=["fp32"])
    parser.add_argument("--compile", nargs="+", choices=["off", "on"], default=["off"])
    parser.add_argument("--steps", type=int, help="timed steps (default: --repeats)")
    parser.add_argument("--batch_size", type=int, help=f"default per (device, stage): {BATCH}")
    parser.add_argument("--frames", type=int, help="pixel frames (default: 17)")
    parser.add_argument("--resolution", type=int, help="default: 32 for tiny, else 128")
    parser.add_argument("--attention_backend", choices=["sdpa", "xformers", "naive"])
    parser.add_argument(
        "--parts", nargs="+", choices=["all", *PARTS], default=["all"], help="all: the whole step"
    )
    parser.add_argument(
        "--peak_tflops",
        type=peak_argument,
        help="peak TFLOP/s for the MFU (989: dense-bf16 H100 SXM), or 'matmul': this device's "
        "measured rate of a 2048^3 matmul in the first --dtype",
    )
    parser.add_argument(
        "--max_seconds", type=float, default=float("inf"), help="skip settings after this long"
    )
    args = parser.parse_args()
    args.steps = args.steps or args.repeats
    device = setup(args)
    args.peak_tflops_measured = args.peak_tflops == "matmul"
    if args.peak_tflops_measured:
        args.peak_tflops = matmul_tflops(device, args.dtype[0])
    for name in args.presets:
        autoencoder_preset(name)  # an unknown preset fails here, before any work

    report = {
        "benchmark": "train_step",
        "device": str(device),
        "machine": machine(device),
        "peak_tflops": args.peak_tflops,
        "parts": "encoder / prior / decoder: that network alone on its stage-1 inputs, forward, "
        "mean square of its output, backward, AdamW; FLOPs from training_flops_per_example(part)",
        "step": "zero_grad, forward under autocast, backward, clip_grad_norm_(1.0), AdamW",
        "mfu": "training_flops_per_example x examples_per_s / (peak_tflops x 1e12)",
        "memory": MEMORY_NOTE,
        "results": [],
    }
    began = time.perf_counter()
    for preset, stage, part, dtype, compiled in itertools.product(
        args.presets, args.stages, args.parts, args.dtype, args.compile
    ):
        if stage == 2 and part != "all":
            continue  # the parts are stage 1's networks
        frames, resolution = CLIPS.get(preset, (17, 128))
        setting = Setting(
            preset,
            stage,
            dtype,
            compiled,
            args.batch_size or BATCH[(device.type, stage)],
            args.frames or frames,
            args.resolution or resolution,
            part,
        )
        if time.perf_counter() - began > args.max_seconds:
            result = {**dataclasses.asdict(setting), "skipped": "--max_seconds"}
        else:
            result = run_with_fallback(setting, device, args)
        report["results"].append(result)
        write_json(report, args.out)  # partial results survive a killed run
    if args.peak_tflops_measured:  # the fastest matmul of the run's start and end: the least load
        args.peak_tflops = max(args.peak_tflops, matmul_tflops(device, args.dtype[0]))
        report["peak_tflops"] = args.peak_tflops
        for result in report["results"]:
            if result.get("achieved_tflops"):
                result["mfu"] = result["achieved_tflops"] / args.peak_tflops
    report["best"] = best_per_preset_stage(report["results"])
    report["machine"]["load_average_1_5_15min_at_end"] = machine(device)["load_average_1_5_15min"]
    emit(report, args.out)
    return report


if __name__ == "__main__":
    main()
