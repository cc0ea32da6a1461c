"""The lean-block candidates of issue 16, each timed against the current code in one process.
Prints JSON.

    python benchmarks/bench_lean_block.py --threads 1 --out benchmarks/results/cpu_lean_block.json

One factorised TransformerBlock (width 512, 8 heads, the peer benchmark's 2 x 5 x 16 x 16 tokens),
forward + backward, with the candidates applied by patching (the library keeps what paid):
- `layout`: q, k, v as permuted views of the qkv projection straight into SDPA, so neither
  attention transposes the token grid (SelfAttention's (N, L, H, D) layout instead transposes
  the tokens for the temporal attention);
- `fused_rms_norm`: the QK-norm by F.rms_norm instead of its float32 formula;
- `addcmul`: AdaLN's x * (1 + scale) + shift as one torch.addcmul.
The variants run in turns with the current block (`base`); each figure is a median and `ratio` the
variant's over base's. Also timed: AdamW on the 47 M parameters of the 8-block VideoTransformer,
per-tensor loop (torch's CPU default) against fused (the trainer's), and one sincos_3d positional
table for that grid (what a cache per grid would save per forward and level).
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from common import add_common_arguments, emit, machine, setup

from ulvideo.models.transformer import VideoTransformer
from ulvideo.nn import sincos_3d
from ulvideo.nn import transformer as T


def grid_attention(self, x: torch.Tensor, temporal: bool) -> torch.Tensor:
    # the `layout` candidate: SDPA over permuted views, batch dims (B, T or S, H), no grid transpose
    b, t, s, c = x.shape
    q, k, v = self.qkv(x).view(b, t, s, 3, self.heads, c // self.heads).unbind(3)
    q, k = T.rms_norm(q, self.q_scale), T.rms_norm(k, self.k_scale)
    perm = (0, 2, 3, 1, 4) if temporal else (0, 1, 3, 2, 4)
    out = F.scaled_dot_product_attention(*(u.permute(perm) for u in (q, k, v)))
    return self.out(out.permute([perm.index(i) for i in range(5)]).reshape(b, t, s, c))


def layout_forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    mods = self.mod(cond).chunk(self.mod.out_features // x.shape[-1], dim=-1)
    x = x + grid_attention(self.attn, T.modulate(self.norm(x), *mods[0:2]), temporal=False)
    x = x + grid_attention(self.temporal_attn, T.modulate(self.norm(x), *mods[2:4]), True)
    return x + self.mlp(T.modulate(self.norm(x), *mods[-2:]))


def fused_rms_norm(x: torch.Tensor, scale: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return F.rms_norm(x.float(), (x.shape[-1],), scale.float(), eps).to(x.dtype)


def addcmul_modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    shape = (x.shape[0],) + (1,) * (x.ndim - 2) + (x.shape[-1],)
    return torch.addcmul(shift.reshape(shape), x, 1 + scale.reshape(shape))


# name -> what is patched while it runs: (module, attribute, replacement)
VARIANTS = {
    "base": [],
    "layout": [(T.TransformerBlock, "forward", layout_forward)],
    "fused_rms_norm": [(T, "rms_norm", fused_rms_norm)],
    "addcmul": [(T, "modulate", addcmul_modulate)],
}


def run_variant(name: str, block, x, cond) -> tuple[float, torch.Tensor]:
    saved = [(owner, attr, getattr(owner, attr)) for owner, attr, _ in VARIANTS[name]]
    for owner, attr, new in VARIANTS[name]:
        setattr(owner, attr, new)
    try:
        block.zero_grad(set_to_none=True)
        start = time.perf_counter()
        out = block(x, cond)
        out.square().mean().backward()
        return time.perf_counter() - start, out.detach()
    finally:
        for owner, attr, old in saved:
            setattr(owner, attr, old)


def blocks(args) -> dict:
    torch.manual_seed(0)
    block = T.TransformerBlock(args.width, args.width // 64, args.width)
    x, cond = torch.randn(2, 5, 256, args.width), torch.randn(2, args.width)
    reference = run_variant("base", block, x, cond)[1]
    error = {
        n: float((run_variant(n, block, x, cond)[1] - reference).abs().max()) for n in VARIANTS
    }
    times = {name: [] for name in VARIANTS}
    for _ in range(args.repeats):
        for name in VARIANTS:
            times[name].append(run_variant(name, block, x, cond)[0])
    median = {name: statistics.median(ts) for name, ts in times.items()}
    return {
        name: {
            "median_s": round(median[name], 4),
            "ratio": round(median[name] / median["base"], 3),
            "max_abs_difference": error[name],
        }
        for name in VARIANTS
    }


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def optimizer_and_positions(args) -> dict:
    net = VideoTransformer(16, (args.width,), (8,), head_dim=64)
    for p in net.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    loop = torch.optim.AdamW(net.parameters(), lr=1e-4, foreach=False)
    fused = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=True)
    loop.step(), fused.step()  # the moments exist before the timing
    return {
        "params": sum(p.numel() for p in net.parameters()),
        "adamw_per_tensor_loop_s": round(timed(loop.step, args.repeats), 4),
        "adamw_fused_s": round(timed(fused.step, args.repeats), 4),
        "sincos_3d_5x16x16_s": round(timed(lambda: sincos_3d(5, 16, 16, args.width), 20), 5),
    }


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, warmup=1, repeats=8)
    parser.add_argument("--width", type=int, default=512)
    args = parser.parse_args()
    device = setup(args)
    report = {
        "benchmark": "lean_block",
        "machine": machine(device),
        "block_forward_backward": blocks(args),
        "optimizer_and_positions": optimizer_and_positions(args),
    }
    report["machine"]["load_average_1_5_15min_at_end"] = machine(device)["load_average_1_5_15min"]
    emit(report, args.out)
    return report


if __name__ == "__main__":
    main()
