"""Attention backends, SDPA against xformers (where installed, CUDA only) against the naive
reference, over sequence lengths typical of the prior. Prints JSON.

    python benchmarks/bench_attention_backends.py --device cpu --threads 1 \\
        --out benchmarks/results/cpu_attention_backends.json
    python benchmarks/bench_attention_backends.py --device cuda --dtype bf16 --heads 16 \\
        --tokens 65536

Each case is `ulvideo.nn.attention` on (B, L, H, D) with B = --tokens // L, so every length
does the same projections' worth of work and the attention share grows with L. The default
lengths are the prior's: 5 and 16 (temporal attention over latent frames), 256 (spatial, 16 x 16
tokens per frame), 1280 and 4096 (full attention over 5 or 16 frames of 16 x 16). Reported:
forward seconds (sampling), forward + backward seconds (training), peak memory, and the largest
absolute difference of each backend's output from the naive reference in float32.
"""

import argparse

import torch
from common import DTYPES, MEMORY_NOTE, add_common_arguments, emit, machine, measure, setup

from ulvideo.nn import attention, naive_attention, resolve_backend

BACKENDS = ("sdpa", "xformers", "naive")


def unavailable(backend: str, device: torch.device) -> str | None:
    """Why `backend` cannot run on `device`, or None if it can."""
    try:
        resolve_backend(backend, device)
    except (RuntimeError, ValueError) as err:
        return str(err)
    return None


def time_case(backend, q, k, v, device, args) -> dict:
    grad = torch.randn_like(q)

    def forward():
        with torch.no_grad():
            attention(q, k, v, backend=backend)

    def forward_backward():
        attention(q, k, v, backend=backend).backward(grad)
        q.grad = k.grad = v.grad = None

    fwd = measure(forward, device, args.warmup, args.repeats)
    train = measure(forward_backward, device, args.warmup, args.repeats)
    with torch.no_grad():  # against the reference in float32, whatever the benchmark's dtype
        reference = naive_attention(q.float(), k.float(), v.float())
        error = (attention(q, k, v, backend=backend).float() - reference).abs().max()
    return {
        "forward_s": fwd.median_s,
        "forward_backward_s": train.median_s,
        "forward_backward_peak_memory_mb": train.peak_memory_mb,
        "forward_backward_step_memory_mb": train.step_memory_mb,
        "max_abs_diff_from_naive": float(error),
    }


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, warmup=1, repeats=5)
    parser.add_argument("--lengths", type=int, nargs="+", default=[5, 16, 256, 1280, 4096])
    parser.add_argument("--tokens", type=int, default=8192, help="B x L for every length")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head_dim", type=int, default=64)
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp32")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    args = parser.parse_args()
    device = setup(args)
    dtype = DTYPES[args.dtype] or torch.float32
    if min(args.lengths) < 1 or args.tokens < max(args.lengths):
        raise SystemExit("--lengths must be >= 1 and at most --tokens (B = tokens // L >= 1)")

    skipped = {b: why for b in args.backends if (why := unavailable(b, device))}
    report = {
        "benchmark": "attention_backends",
        "device": str(device),
        "machine": machine(device),
        "settings": {k: getattr(args, k) for k in ("tokens", "heads", "head_dim", "dtype")},
        "memory": MEMORY_NOTE,
        "skipped_backends": skipped,
        "by_length": [],
    }
    generator = torch.Generator().manual_seed(0)
    for length in args.lengths:
        shape = (args.tokens // length, length, args.heads, args.head_dim)
        q, k, v = (
            torch.randn(shape, generator=generator).to(device, dtype).requires_grad_()
            for _ in range(3)
        )
        row = {"length": length, "batch": shape[0]}
        for backend in args.backends:
            if backend not in skipped:
                row[backend] = time_case(backend, q, k, v, device, args)
        if "sdpa" in row and "naive" in row:
            row["naive_over_sdpa_forward_backward"] = (
                row["naive"]["forward_backward_s"] / row["sdpa"]["forward_backward_s"]
            )
        report["by_length"].append(row)
    report["machine"]["load_average_1_5_15min_at_end"] = machine(device)["load_average_1_5_15min"]
    emit(report, args.out)
    return report


if __name__ == "__main__":
    main()
