"""Per-sample noise: sample k's noise depends only on (seed, k), whatever the batch it is drawn in.

EDM2's `StackedRandomGenerator`: one torch.Generator per batch row, each draw stacked row by row.
Samplers and decoders take its `randn_like` (k-diffusion's `noise_sampler`), so a sample drawn at
batch 1, at batch 4 or on another GPU gets the same noise. `TrainingDraws` does the same for the
training examples of stage 2, keyed by each example's position in the run's stream of examples.
"""

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


def sample_seed(seed: int, index: int, stream: int = 0) -> int:
    """The generator seed of sample `index` under run seed `seed` (a SeedSequence hash of both);
    another `stream` gives independent seeds for the same (seed, index)."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and sample index must be >= 0, got {seed} and {index}")
    key = (seed, index) if stream == 0 else (seed, index, stream)
    return int(np.random.SeedSequence(key).generate_state(1, np.uint64)[0] >> 1)


class StackedRandomGenerator:
    """One generator per batch row: row k of every draw comes from generator k alone."""

    def __init__(self, device: torch.device | str, seed: int, indices: Iterable[int]):
        self.generators = [
            torch.Generator(device).manual_seed(sample_seed(seed, int(i))) for i in indices
        ]

    def randn(self, shape: tuple[int, ...], *, dtype=None, device=None) -> Tensor:
        if shape[0] != len(self.generators):
            raise ValueError(
                f"this generator draws {len(self.generators)} rows, asked for shape {tuple(shape)}"
            )
        return torch.stack(
            [
                torch.randn(shape[1:], generator=g, dtype=dtype, device=device)
                for g in self.generators
            ]
        )

    def randn_like(self, x: Tensor) -> Tensor:
        return self.randn(x.shape, dtype=x.dtype, device=x.device)

    def rand(self, *, device=None) -> Tensor:
        """One U[0, 1) draw per row."""
        return torch.stack([torch.rand((), generator=g, device=device) for g in self.generators])


def randn_like(x: Tensor, rng: StackedRandomGenerator | None = None) -> Tensor:
    """Standard normal noise of x's shape: per sample from `rng`, else from torch's global RNG."""
    return torch.randn_like(x) if rng is None else rng.randn_like(x)


BATCH_STREAM = 1  # sample_seed stream of the draws shared by a whole global batch


@dataclass(frozen=True)
class TrainingDraws:
    """The random draws of one training micro-batch, keyed by where its examples are in the run's
    stream of examples, not by which process holds them: a global batch of `global_batch` examples
    starting at example `first` of the run, of which this process holds rows `start` to
    `start + rows`. Split over any number of processes (with the same global batch) or resumed on
    another number, every example gets the same t, noise and label dropout.
    """

    seed: int
    first: int
    global_batch: int
    start: int
    rows: int

    def __post_init__(self):
        if not 0 <= self.start < self.start + self.rows <= self.global_batch:
            raise ValueError(
                f"rows {self.start}..{self.start + self.rows} are not inside a global batch of "
                f"{self.global_batch}"
            )

    def batch_generator(self) -> torch.Generator:
        """A CPU generator shared by the whole global batch (the same on every process)."""
        return torch.Generator().manual_seed(sample_seed(self.seed, self.first, BATCH_STREAM))

    def rows_generator(self, device) -> StackedRandomGenerator:
        """One generator per example of this process, seeded by its position in the run."""
        first = self.first + self.start
        return StackedRandomGenerator(device, self.seed, range(first, first + self.rows))
