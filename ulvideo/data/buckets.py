"""Shape buckets and the batch plan of a mixture of datasets (Open-Sora's ``bucket_config``).

A bucket is a clip shape (frames x height x width; frames 1 for images) with a probability and a
per-process batch size. Every example is assigned the one bucket nearest to its own aspect ratio
and length among those it can fill (enough frames, at least the bucket's height and width: clips
are resized down to cover the bucket, keeping their aspect ratio, then cropped, never stretched or
padded). The batch plan then says, for each (seed, epoch, step), which source, which bucket and
which examples form the global batch: a pure function, so a resumed run continues the same stream
on any number of processes (process r takes rows r * batch_size onwards).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

BUCKET_FORMAT = "FRAMESxHEIGHTxWIDTH=PROBABILITY:BATCH_SIZE, comma-separated, e.g. '17x32x32=0.7:8,1x32x32=0.3:32'"
PLAN_STREAM = 0x0B0C  # keys the plan's draws apart from the per-example ones (item_rng)


@dataclass(frozen=True)
class Bucket:
    """One clip shape and how often (among the buckets a source fills) and how many per process."""

    frames: int
    height: int
    width: int
    prob: float = 1.0
    batch_size: int = 1

    @property
    def name(self) -> str:
        return f"{self.frames}x{self.height}x{self.width}"

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.frames, self.height, self.width


def parse_buckets(text: str) -> tuple[Bucket, ...]:
    """The bucket table of ``--buckets`` (BUCKET_FORMAT); a clear error for anything else."""
    buckets = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = re.fullmatch(r"(\d+)x(\d+)x(\d+)=([0-9.eE+-]+):(\d+)", part.replace(" ", ""))
        if match is None:
            raise ValueError(f"bucket {part!r} is not {BUCKET_FORMAT}")
        frames, height, width, batch = (int(match.group(i)) for i in (1, 2, 3, 5))
        prob = float(match.group(4))
        if min(frames, height, width, batch) < 1 or not (prob > 0 and math.isfinite(prob)):
            raise ValueError(
                f"bucket {part!r}: frames, height, width and batch size must be >= 1 and the "
                "probability > 0"
            )
        buckets.append(Bucket(frames, height, width, prob, batch))
    if not buckets:
        raise ValueError(f"--buckets is empty: give {BUCKET_FORMAT}")
    names = [b.name for b in buckets]
    if len(set(names)) != len(names):
        raise ValueError(f"--buckets names a shape twice: {names}")
    return tuple(buckets)


def format_buckets(buckets) -> str:
    """The ``--buckets`` text of a bucket table (parse_buckets' inverse)."""
    return ",".join(f"{b.name}={b.prob:g}:{b.batch_size}" for b in buckets)


def assign_buckets(shapes: np.ndarray, buckets) -> np.ndarray:
    """The bucket index of each example of native ``shapes`` ``(N, 3)`` (frames, height, width),
    or -1 where it fills no bucket. Among the buckets it fills, the nearest in log aspect ratio
    plus log length; ties go to the nearest in area."""
    shapes = np.asarray(shapes, dtype=np.float64).reshape(-1, 3)
    table = np.array([b.shape for b in buckets], dtype=np.float64)
    f, h, w = (shapes[:, None, i] for i in range(3))
    bf, bh, bw = (table[None, :, i] for i in range(3))
    fills = (f >= bf) & (h >= bh) & (w >= bw)
    with np.errstate(divide="ignore", invalid="ignore"):
        distance = np.abs(np.log(w / h) - np.log(bw / bh)) + np.abs(np.log(f / bf))
        area = np.abs(np.log(h * w / (bh * bw)))
    distance = np.where(fills, np.round(distance, 9), np.inf)
    nearest = distance == distance.min(axis=1, keepdims=True)
    choice = np.argmin(np.where(nearest & fills, area, np.inf), axis=1)
    return np.where(fills.any(axis=1), choice, -1)


@dataclass(frozen=True)
class StepPlan:
    """One step's global batch: its source, its bucket and the source's example indices (rows)."""

    source: int
    bucket: int
    indices: np.ndarray


class BatchPlan:
    """Which examples form each step's global batch, deterministic in (seed, epoch, step).

    ``groups[s][b]``: the example indices of source ``s`` assigned bucket ``b``. Each step draws a
    source by ``weights``, then one of the buckets that source fills by the buckets' probabilities
    (renormalised over them), then the next ``batch_size * world`` examples of that (source,
    bucket) in the epoch's permutations of it (a fresh permutation each time one runs out). An
    epoch is as many steps as take the sources' examples once at the expected global batch.
    """

    def __init__(self, groups, weights, buckets, world: int, seed: int):
        self.groups = [[np.asarray(g, dtype=np.int64) for g in source] for source in groups]
        self.buckets, self.world, self.seed = tuple(buckets), world, seed
        sizes = np.array([[len(g) for g in source] for source in self.groups], dtype=np.float64)
        empty = [i for i, row in enumerate(sizes) if row.sum() == 0]
        if empty:
            raise ValueError(
                f"sources {empty} of the mixture fill no bucket: no example to train on"
            )
        weights = np.asarray(weights, dtype=np.float64)
        self.source_probs = weights / weights.sum()
        probs = (sizes > 0) * np.array([b.prob for b in self.buckets])[None]
        self.bucket_probs = probs / probs.sum(axis=1, keepdims=True)  # given the source
        global_batch = np.array([b.batch_size * world for b in self.buckets], dtype=np.float64)
        expected_batch = float(self.source_probs @ self.bucket_probs @ global_batch)
        self.steps_per_epoch = max(1, round(sizes.sum() / expected_batch))

    def global_batch(self, bucket: int) -> int:
        return self.buckets[bucket].batch_size * self.world

    @lru_cache(maxsize=4)  # noqa: B019 (one plan per run)
    def _epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The epoch's (source, bucket, uses of that pair before this step) of every step."""
        rng = np.random.default_rng((self.seed, epoch, PLAN_STREAM))
        n = self.steps_per_epoch
        sources = rng.choice(len(self.source_probs), size=n, p=self.source_probs)
        cdf = np.cumsum(self.bucket_probs, axis=1)[sources]
        buckets = np.minimum((rng.random(n)[:, None] >= cdf).sum(axis=1), len(self.buckets) - 1)
        pair = sources * len(self.buckets) + buckets
        uses, seen = np.zeros(n, dtype=np.int64), {}
        for i, p in enumerate(pair.tolist()):
            uses[i] = seen.get(p, 0)
            seen[p] = uses[i] + 1
        return sources, buckets, uses

    def step(self, epoch: int, step: int) -> StepPlan:
        """The global batch of step ``step`` (0-based) of ``epoch``."""
        if not 0 <= step < self.steps_per_epoch:
            raise IndexError(f"step {step} outside the epoch's {self.steps_per_epoch} steps")
        sources, buckets, uses = self._epoch(epoch)
        s, b = int(sources[step]), int(buckets[step])
        group = self.groups[s][b]
        size = self.global_batch(b)
        positions = uses[step] * size + np.arange(size)
        cycles = positions // len(group)
        indices = np.empty(size, dtype=np.int64)
        for cycle in np.unique(cycles):
            perm = np.random.default_rng((self.seed, epoch, s, b, int(cycle))).permutation(group)
            rows = cycles == cycle
            indices[rows] = perm[positions[rows] % len(group)]
        return StepPlan(s, b, indices)
