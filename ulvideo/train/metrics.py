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
    every process's peak memory. Tokens and FLOPs per example are functions of the clip shape
    (frames, height, width); with `per_bucket`, examples/s and the data-wait fraction are also
    logged per shape bucket (`bucket/<F>x<H>x<W>/...`, over the time of that bucket's steps)."""

    def __init__(
        self,
        accelerator,
        tokens_per_example,
        flops_per_example,
        peak_tflops: float | None,
        per_bucket: bool = False,
    ):
        self.accelerator = accelerator
        self.tokens_per_example = tokens_per_example
        self.flops_per_example = flops_per_example
        self.peak_tflops = peak_tflops
        self.per_bucket = per_bucket

    def start(self, step: int) -> None:
        """Count from `step` (the run's first, or the one it resumed at)."""
        self.tic, self.data_wait, self.step_wait = time.perf_counter(), 0.0, 0.0
        self.step_tic = self.tic
        self.examples = self.tokens = self.flops = 0.0
        self.buckets: dict[str, list[float]] = {}  # name: [examples, seconds, data wait]

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
            self.step_wait += time.perf_counter() - tic
            yield batch

    def step_done(self, shape: tuple[int, int, int], examples: int) -> None:
        """One optimizer step of `examples` (all processes) clips of `shape` is done."""
        self.examples += examples
        self.tokens += examples * self.tokens_per_example(shape)
        self.flops += examples * self.flops_per_example(shape)
        now = time.perf_counter()
        stats = self.buckets.setdefault("x".join(map(str, shape)), [0.0, 0.0, 0.0])
        stats[0] += examples
        stats[1] += now - self.step_tic
        stats[2] += self.step_wait
        self.step_tic, self.step_wait = now, 0.0

    def record(self, step: int) -> dict:
        """The throughput since `start` (all processes must call it: it gathers), and restart."""
        elapsed = time.perf_counter() - self.tic
        device = self.accelerator.device
        names = sorted(self.buckets)  # the same on every process: each step is one bucket
        waits = [self.buckets[n][2] for n in names] if self.per_bucket else []
        mine = torch.tensor(
            [self.data_wait, peak_memory_bytes(device), *waits], dtype=torch.float64
        )
        every = self.accelerator.gather(mine.to(device)).view(-1, len(mine)).cpu()
        flops_per_s = self.flops / elapsed
        record = {
            "examples_per_s": self.examples / elapsed,
            "tokens_per_s": self.tokens / elapsed,
            "model_tflops_per_s": flops_per_s / 1e12,
            "data_wait_s": float(every[:, 0].max()),
            "data_wait_fraction": float(every[:, 0].max()) / elapsed,
            **{f"peak_memory_gib/rank{r}": float(m) / 2**30 for r, m in enumerate(every[:, 1])},
        }
        for i, name in enumerate(names if self.per_bucket else []):
            examples, seconds, _ = self.buckets[name]
            record[f"bucket/{name}/examples_per_s"] = examples / seconds
            record[f"bucket/{name}/data_wait_fraction"] = float(every[:, 2 + i].max()) / seconds
        if self.peak_tflops is not None:
            world = self.accelerator.num_processes
            record["mfu"] = flops_per_s / (self.peak_tflops * 1e12 * world)
        self.start(step)
        return record


class BucketMeans:
    """Per shape bucket, the means of a step's logged values (bits/pixel is per pixel, so
    comparable across buckets) over the steps since the last record, averaged over processes:
    `bucket/<F>x<H>x<W>/<name>`. Values stay tensors until `record`, so steps do not sync."""

    def __init__(self, accelerator):
        self.accelerator, self.sums, self.counts = accelerator, {}, {}

    def add(self, shape: tuple[int, int, int], values: dict) -> None:
        bucket = "x".join(map(str, shape))
        for key, value in values.items():
            name = f"bucket/{bucket}/{key}"
            value = torch.as_tensor(value, dtype=torch.float32).detach()
            self.sums[name] = self.sums.get(name, 0.0) + value.to(self.accelerator.device)
            self.counts[name] = self.counts.get(name, 0) + 1

    def record(self) -> dict:
        """The means since the last record (all processes must call it: it reduces)."""
        names = sorted(self.sums)
        if not names:
            return {}
        means = torch.stack([self.sums[n] / self.counts[n] for n in names])
        means = self.accelerator.reduce(means, reduction="mean").cpu()
        self.sums, self.counts = {}, {}
        return {name: float(m) for name, m in zip(names, means)}
