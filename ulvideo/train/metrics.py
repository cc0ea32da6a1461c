"""Run logging: a JSONL metrics file always, plus the accelerate trackers of `--report_to`
(ulvideo.train.trackers) with the same values at the same steps."""

import json
import math
import time
from pathlib import Path

import torch

from .distributed import peak_memory_bytes
from .trackers import log_clips


class MetricsLog:
    """Appends one JSON object per log step to `<run>/metrics.jsonl` (main process only)."""

    def __init__(self, accelerator, run_dir, resume_step: int = 0):
        self.accelerator = accelerator
        self.path = Path(run_dir) / "metrics.jsonl"
        if accelerator.is_main_process and self.path.exists():
            self._truncate_after(resume_step)

    def _truncate_after(self, step: int) -> None:
        # a resumed run rewrites the steps it repeats, so the log has each step once
        kept = [
            line
            for line in self.path.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step
        ]
        self.path.write_text("".join(line + "\n" for line in kept))

    def log(self, step: int, values: dict) -> None:
        if not self.accelerator.is_main_process:
            return
        # JSON has no NaN: a non-finite value is written as null
        clean = {
            k: None if isinstance(v, float) and not math.isfinite(v) else v
            for k, v in values.items()
        }
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **clean}) + "\n")
        self.accelerator.log(
            {k: v for k, v in values.items() if isinstance(v, (int, float))}, step=step
        )

    def log_clips(self, step: int, videos: dict) -> None:
        """An evaluation's clips (real, reconstruction) as one image, to the trackers."""
        if self.accelerator.is_main_process:
            log_clips(self.accelerator, step, videos)


def read_metrics(run_dir) -> list[dict]:
    """All records of `<run>/metrics.jsonl`, in order."""
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Throughput:
    """What a cluster user reads off each logged step, over the steps since the previous one:
    examples/s and latent tokens/s (all processes), the model's training TFLOP/s and, given the
    per-process `peak_tflops`, MFU (the presets' FLOP counts, ulvideo.models.flops, over the peak
    of all processes), the seconds each process waited for its data loader (the slowest one's) and
    every process's peak memory."""

    def __init__(
        self,
        accelerator,
        examples_per_step: int,
        tokens_per_example: int,
        flops_per_example: float,
        peak_tflops: float | None,
    ):
        self.accelerator = accelerator
        self.examples_per_step = examples_per_step
        self.tokens_per_example = tokens_per_example
        self.flops_per_example = flops_per_example
        self.peak_tflops = peak_tflops

    def start(self, step: int) -> None:
        """Count from `step` (the run's first, or the one it resumed at)."""
        self.tic, self.tic_step, self.data_wait = time.perf_counter(), step, 0.0

    def batches(self, loader):
        """The loader's batches, adding the time spent waiting for each to `data_wait`."""
        iterator = iter(loader)
        while True:
            tic = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            self.data_wait += time.perf_counter() - tic
            yield batch

    def record(self, step: int) -> dict:
        """The throughput since `start` (all processes must call it: it gathers), and restart."""
        elapsed = time.perf_counter() - self.tic
        examples = (step - self.tic_step) * self.examples_per_step
        device = self.accelerator.device
        mine = torch.tensor([self.data_wait, peak_memory_bytes(device)], dtype=torch.float64)
        every = self.accelerator.gather(mine.to(device)).view(-1, 2).cpu()
        flops_per_s = examples * self.flops_per_example / elapsed
        record = {
            "examples_per_s": examples / elapsed,
            "tokens_per_s": examples * self.tokens_per_example / elapsed,
            "model_tflops_per_s": flops_per_s / 1e12,
            "data_wait_s": float(every[:, 0].max()),
            "data_wait_fraction": float(every[:, 0].max()) / elapsed,
            **{f"peak_memory_gib/rank{r}": float(m) / 2**30 for r, m in enumerate(every[:, 1])},
        }
        if self.peak_tflops is not None:
            world = self.accelerator.num_processes
            record["mfu"] = flops_per_s / (self.peak_tflops * 1e12 * world)
        self.start(step)
        return record
