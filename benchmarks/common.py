"""Shared helpers of the benchmark scripts: the machine's description, timing with warm-up and
median, peak memory, autocast by name, and JSON output.

Scripts run as `python benchmarks/<name>.py`, so they import this as `common`.
"""

import argparse
import contextlib
import ctypes
import json
import math
import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ulvideo.nn import xformers_available

DTYPES = {"fp32": None, "bf16": torch.bfloat16}
MEMORY_NOTE = (
    "CUDA: torch.cuda.max_memory_allocated; CPU: peak resident set size of the process (VmHWM). "
    "step_memory_mb is the peak minus what was resident just before the timed steps."
)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else platform.processor()."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine(device: torch.device | str = "cpu") -> dict:
    """What the numbers were measured on, including the load from other processes."""
    device = torch.device(device)
    info = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda_device": None,
        "xformers_installed": xformers_available(),
        "load_average_1_5_15min": [round(x, 2) for x in os.getloadavg()],
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            cuda_device=props.name,
            cuda_memory_gb=round(props.total_memory / 2**30, 1),
            cuda_capability=f"{props.major}.{props.minor}",
            cuda_runtime=torch.version.cuda,
        )
    return info


def resolve_device(name: str) -> torch.device:
    """torch.device(name), with a clear error (before any work) when CUDA is asked for but absent."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            f"--device {name}: this torch ({torch.__version__}) sees no CUDA device; "
            "run on a GPU machine or pass --device cpu"
        )
    if device.type not in ("cpu", "cuda"):
        raise SystemExit(f"--device must be cpu or cuda[:N], got {name!r}")
    return device


def autocast(device: torch.device, dtype: str):
    """The autocast context for a dtype name: "fp32" (none) or "bf16" (bf16 autocast)."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    if DTYPES[dtype] is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[dtype])


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _proc_status_mb(field: str) -> float | None:
    status = Path("/proc/self/status")
    match = status.exists() and re.search(rf"^{field}:\s+(\d+) kB", status.read_text(), re.M)
    return int(match.group(1)) / 1024 if match else None


def _reset_cpu_peak() -> float | None:
    # Give freed heap back to the OS, then reset the peak RSS (VmHWM) to the current RSS (Linux)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    return _proc_status_mb("VmRSS")


def reset_peak_memory(device: torch.device) -> float | None:
    """Start a peak-memory window; returns the memory resident now (MB), None if unmeasurable."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / 2**20
    return _reset_cpu_peak()


def peak_memory(device: torch.device) -> float | None:
    """Peak memory (MB) since reset_peak_memory, None if unmeasurable."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return _proc_status_mb("VmHWM")


@dataclass
class Timing:
    """Seconds per call: the median of the timed calls, all of them, and the warm-up calls."""

    median_s: float
    times_s: list[float]
    warmup_s: list[float]
    peak_memory_mb: float | None
    step_memory_mb: float | None

    def to_dict(self) -> dict:
        return {
            "median_s": round(self.median_s, 6),
            "times_s": [round(t, 6) for t in self.times_s],
            "warmup_s": [round(t, 6) for t in self.warmup_s],
            "peak_memory_mb": _round(self.peak_memory_mb),
            "step_memory_mb": _round(self.step_memory_mb),
        }


def _round(x: float | None, digits: int = 1) -> float | None:
    return None if x is None else round(x, digits)


def measure(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> Timing:
    """Time `fn()` `repeats` times after `warmup` calls (device synchronised around each call);
    the median is robust to other processes loading a shared machine."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")

    def timed() -> float:
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        return time.perf_counter() - start

    warmup_s = [timed() for _ in range(warmup)]
    resident = reset_peak_memory(device)
    times = [timed() for _ in range(repeats)]
    peak = None if resident is None else peak_memory(device)
    step = None if peak is None or resident is None else max(0.0, peak - resident)
    return Timing(statistics.median(times), times, warmup_s, peak, step)


def loglog_slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log(y) against log(x): the exponent k in y ~ x^k."""
    if len(xs) < 2 or len(xs) != len(ys) or min(xs) <= 0 or min(ys) <= 0:
        raise ValueError("need at least two points with positive x and y")
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def add_common_arguments(parser: argparse.ArgumentParser, warmup: int, repeats: int) -> None:
    """--device, --warmup, --repeats, --threads and --out, the flags every benchmark shares."""
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", default=default_device, help="cpu or cuda[:N]")
    parser.add_argument("--warmup", type=int, default=warmup, help="untimed calls first")
    parser.add_argument("--repeats", type=int, default=repeats, help="timed calls (median)")
    parser.add_argument(
        "--threads", type=int, help="torch CPU threads (default: torch's; 1 on a busy machine)"
    )
    parser.add_argument("--out", type=Path, help="also write the JSON here")


def set_threads(threads: int | None) -> None:
    """Apply --threads (None keeps torch's default)."""
    if threads is not None:
        if threads < 1:
            raise SystemExit(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)


def setup(args: argparse.Namespace) -> torch.device:
    """Apply --threads and resolve --device (a clear error before any work if it is missing)."""
    set_threads(args.threads)
    return resolve_device(args.device)


def write_json(result: dict, out: Path | None) -> None:
    """Write `result` as JSON to `out` (if given), atomically."""
    if out is None:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, out)


def emit(result: dict, out: Path | None) -> None:
    """Print `result` as JSON and write it to `out` (if given)."""
    print(json.dumps(result, indent=2))
    write_json(result, out)
