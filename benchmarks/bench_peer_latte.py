"""Our factorised VideoTransformer against Latte's (Vchitect/Latte `models/latte.py`) at equal
parameter count: one training step each, timed alternately in one process. Prints JSON.

    git clone https://github.com/Vchitect/Latte /tmp/latte     # or any checkout with models/
    LATTE_DIR=/tmp/latte python benchmarks/bench_peer_latte.py --threads 1 \\
        --compile off on --out benchmarks/results/cpu_peer_latte.json

Latte's code is read from the checkout named by LATTE_DIR (never vendored); the two timm layers it
imports (`Mlp`, `PatchEmbed`) are given by a minimal shim, so timm need not be installed. Without
LATTE_DIR the script prints one line saying why it is skipped and exits 0.

The step is the same for both: zero_grad, forward on noisy latents, MSE to a random target,
backward, AdamW (fused, as ulvideo's trainer). Latte's 8-block model is 4 spatial + 4 temporal
blocks; ours has spatial and temporal attention in every block, so equal parameters means fewer of
our blocks (--depth 8 against --latte_depth 10: 47.2 M against 48.3 M). The two models are timed
in turns (Latte, ours, Latte, ...) so load from other processes hits both; `ratio` is our median
step time over Latte's, `ratio_per_param` the same per parameter, `ratio_per_flop` the same per
training FLOP (3 x the forward's, counted by FlopCounterMode: matmuls and attention, as
ulvideo.models.flops); `ratio_of_fastest_steps` compares the least disturbed steps. `profile`
splits one more step of each by the profiler into matmuls, attention, the optimizer and the rest
(elementwise ops, norms, copies; inside compiled blocks, inductor's fused kernels). `--compile on`
compiles each transformer block of both models in place (regional compilation: ulvideo.nn's
compile_blocks for ours, the same torch.compile call on each of Latte's blocks).
"""

import argparse
import importlib.util
import os
import statistics
import sys
import time
import types
from pathlib import Path

import torch
from common import add_common_arguments, emit, machine, setup
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ulvideo.models import count_params
from ulvideo.models.transformer import VideoTransformer
from ulvideo.nn import compile_blocks

SIZES = (
    "batch_size",
    "channels",
    "frames",
    "grid",
    "width",
    "heads",
    "depth",
    "latte_depth",
    "repeats",
)
SKIP = "skipped: set LATTE_DIR to a checkout of github.com/Vchitect/Latte (models/latte.py)"


class _Mlp(nn.Module):
    # timm.models.vision_transformer.Mlp as Latte uses it: fc1 -> act -> fc2 (dropout 0)
    def __init__(self, in_features, hidden_features, act_layer=nn.GELU, drop=0.0):
        super().__init__()
        self.fc1, self.act = nn.Linear(in_features, hidden_features), act_layer()
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class _PatchEmbed(nn.Module):
    # timm's PatchEmbed: a strided Conv2d, tokens flattened to (N, H*W/p^2, C)
    def __init__(self, img_size, patch_size, in_chans, embed_dim, bias=True):
        super().__init__()
        self.patch_size = (patch_size, patch_size)
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size, bias=bias)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


def load_latte(latte_dir: Path) -> types.ModuleType:
    """Latte's models/latte.py from the checkout, with the timm shim in sys.modules."""
    path = latte_dir / "models" / "latte.py"
    if not path.is_file():
        raise SystemExit(
            f"LATTE_DIR={latte_dir} has no models/latte.py: point it at a Latte checkout"
        )
    if importlib.util.find_spec("timm") is None:
        vit = types.ModuleType("timm.models.vision_transformer")
        vit.Mlp, vit.PatchEmbed = _Mlp, _PatchEmbed
        sys.modules["timm"] = types.ModuleType("timm")
        sys.modules["timm.models"] = types.ModuleType("timm.models")
        sys.modules["timm.models.vision_transformer"] = vit
    spec = importlib.util.spec_from_file_location("latte_peer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def trainer(net: nn.Module, forward, target: torch.Tensor):
    """One AdamW training step of `net` on MSE(forward(), target), as a function."""
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=True)  # as ulvideo's trainer

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = (forward() - target).square().mean()
        loss.backward()
        optimizer.step()

    return step


def build(args, latte_module):
    """(name -> (network, forward, target)) for Latte and ours, on the same latent batch."""
    b, c, t, s = args.batch_size, args.channels, args.frames, args.grid
    latte = latte_module.Latte(
        input_size=s,
        patch_size=1,
        in_channels=c,
        hidden_size=args.width,
        depth=args.latte_depth,
        num_heads=args.heads,
        num_frames=t,
        learn_sigma=False,
        extras=1,
        attention_mode=args.latte_attention,
    )
    ours = VideoTransformer(c, (args.width,), (args.depth,), head_dim=args.width // args.heads)
    z = torch.randn(b, c, t, s, s)
    steps = torch.randint(0, 1000, (b,))
    logsnr = torch.randn(b)
    nets = {
        "latte": (latte, lambda: latte(z.transpose(1, 2), steps), z.transpose(1, 2)),
        "ours": (ours, lambda: ours(z, logsnr), z),
    }
    return nets


def compile_latte_blocks(latte: nn.Module) -> None:
    # The same regional compilation as compile_blocks, on Latte's TransformerBlock
    for block in latte.blocks:
        block.compile(dynamic=False)


# Where a step's time goes: profiler op names by kind (the rest: elementwise ops, norms, copies)
KINDS = {
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm"),
    "attention": ("aten::_scaled_dot_product", "aten::_softmax"),
    "optimizer": ("aten::_fused_adamw",),
}


def profile_step(step) -> dict:
    """Self CPU seconds of one step by kind, and its five most expensive other ops."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    by_kind, other = dict.fromkeys([*KINDS, "other"], 0.0), []
    for event in prof.key_averages():
        seconds = event.self_cpu_time_total / 1e6
        kind = next((k for k, names in KINDS.items() if event.key.startswith(names)), "other")
        by_kind[kind] += seconds
        if kind == "other":
            other.append((seconds, event.key))
    total = sum(by_kind.values())
    return {
        "seconds": round(total, 3),
        "share": {k: round(v / total, 3) for k, v in by_kind.items()},
        "top_other_ops_s": {k: round(v, 3) for v, k in sorted(other, reverse=True)[:5]},
    }


def run(args, latte_module, compiled: bool) -> dict:
    torch.manual_seed(0)
    models, flops = {}, {}
    for name, (net, forward, target) in build(args, latte_module).items():
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            forward()
        flops[name] = 3 * counter.get_total_flops()  # forward + backward, as models/flops.py
        models[name] = (net, trainer(net, forward, target))
    compile_s = {}
    for name, (net, step) in models.items():
        if compiled:
            compile_blocks(net) if name == "ours" else compile_latte_blocks(net)
        start = time.perf_counter()
        for _ in range(args.warmup):  # the first call compiles
            step()
        compile_s[name] = time.perf_counter() - start
    times = {name: [] for name in models}
    for _ in range(args.repeats):  # alternating: both models see the same machine load
        for name, (_, step) in models.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(ts) for name, ts in times.items()}
    least = {name: min(ts) for name, ts in times.items()}
    params = {name: count_params(net) for name, (net, _) in models.items()}
    ratio = median["ours"] / median["latte"]
    return {
        "compile": "on" if compiled else "off",
        "params": params,
        "step_s": {
            name: {"median_s": round(median[name], 4), "times_s": [round(x, 4) for x in ts]}
            for name, ts in times.items()
        },
        "warmup_s": {name: round(x, 2) for name, x in compile_s.items()},
        "ratio": round(ratio, 3),
        "ratio_of_fastest_steps": round(least["ours"] / least["latte"], 3),
        "ratio_per_param": round(ratio * params["latte"] / params["ours"], 3),
        "training_flops_per_step": flops,
        "ratio_per_flop": round(ratio * flops["latte"] / flops["ours"], 3),
        "profile": {name: profile_step(step) for name, (_, step) in models.items()},
    }


def main() -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, warmup=2, repeats=6)
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument("--channels", type=int, default=16, help="latent channels")
    parser.add_argument("--frames", type=int, default=5, help="latent frames")
    parser.add_argument("--grid", type=int, default=16, help="latent height = width")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--depth", type=int, default=8, help="our blocks")
    parser.add_argument("--latte_depth", type=int, default=10, help="Latte's blocks (even)")
    parser.add_argument("--latte_attention", default="math", choices=["math", "flash"])
    parser.add_argument("--compile", nargs="+", choices=["off", "on"], default=["off"])
    args = parser.parse_args()
    if not os.environ.get("LATTE_DIR"):
        print(SKIP)
        return None
    latte_module = load_latte(Path(os.environ["LATTE_DIR"]))
    device = setup(args)
    if device.type != "cpu":
        raise SystemExit("bench_peer_latte runs on the CPU only (--device cpu)")
    report = {
        "benchmark": "peer_latte",
        "machine": machine(device),
        "latte": "Vchitect/Latte models/latte.py (timm Mlp/PatchEmbed shimmed), "
        f"attention_mode={args.latte_attention!r}, patch 1, learn_sigma False",
        "step": "zero_grad, forward, MSE to a random target, backward, AdamW(fused=True) (fp32)",
        "sizes": {k: getattr(args, k) for k in SIZES},
        "results": [run(args, latte_module, c == "on") for c in args.compile],
    }
    report["machine"]["load_average_1_5_15min_at_end"] = machine(device)["load_average_1_5_15min"]
    emit(report, args.out)
    return report


if __name__ == "__main__":
    main()
