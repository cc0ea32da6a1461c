"""Per-sample noise: sample k's noise depends only on (seed, k), whatever the batch it is drawn in.

EDM2's `StackedRandomGenerator`: one torch.Generator per batch row, each draw stacked row by row.
Samplers and decoders take its `randn_like` (k-diffusion's `noise_sampler`), so a sample drawn at
batch 1, at batch 4 or on another GPU gets the same noise.
"""

from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor


def sample_seed(seed: int, index: int) -> int:
    """The generator seed of sample `index` under run seed `seed` (a SeedSequence hash of both)."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and sample index must be >= 0, got {seed} and {index}")
    return int(np.random.SeedSequence((seed, index)).generate_state(1, np.uint64)[0] >> 1)


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


def randn_like(x: Tensor, rng: StackedRandomGenerator | None = None) -> Tensor:
    """Standard normal noise of x's shape: per sample from `rng`, else from torch's global RNG."""
    return torch.randn_like(x) if rng is None else rng.randn_like(x)
