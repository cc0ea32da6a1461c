"""A weighted mixture of datasets in shape buckets: ``--data_mix 'videos:/data/ucf=0.7,
imagenet:/data/imagenet=0.3'`` with ``--buckets '17x256x256=1:8,1x256x256=1:64'``.

Every source is assigned to buckets once (ulvideo.data.buckets.assign_buckets); examples that
fill no bucket (too short or too small) are skipped and counted, never padded. Items are keyed by
their place in the batch plan, so a clip's randomness (start, window, flip) depends on (seed,
epoch, step, row) only: the same on any number of processes and after a resume.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .bad_files import BadFileWarning, TooManyBadFilesError
from .buckets import BatchPlan, assign_buckets
from .registry import BUILT_IN, DATASETS

MIX_FORMAT = (
    "NAME[:ROOT]=WEIGHT, comma-separated, NAME one of the datasets "
    f"{DATASETS} (ROOT only for those that need one), e.g. 'videos:/data/ucf101=0.7,"
    "imagenet:/data/imagenet=0.3' or 'demo=0.7,demo_images=0.3'"
)


@dataclass(frozen=True)
class Source:
    """One dataset of a mixture: registry name, root (None for the built-in ones) and weight."""

    name: str
    root: str | None
    weight: float

    @property
    def label(self) -> str:
        return self.name if self.root is None else f"{self.name}:{self.root}"


def parse_data_mix(text: str) -> tuple[Source, ...]:
    """The sources of ``--data_mix`` (MIX_FORMAT); a clear error for anything else."""
    sources = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = re.fullmatch(r"([A-Za-z0-9_]+)(?::(.+))?=([0-9.eE+-]+)", part)
        if match is None:
            raise ValueError(f"data_mix entry {part!r} is not {MIX_FORMAT}")
        name, root, weight = match.group(1), match.group(2), float(match.group(3))
        if name not in DATASETS:
            raise ValueError(f"data_mix names unknown dataset {name!r}: use one of {DATASETS}")
        if (root is None) != (name in BUILT_IN):
            need = "takes no root" if name in BUILT_IN else "needs a root (NAME:ROOT=WEIGHT)"
            raise ValueError(f"data_mix entry {part!r}: dataset {name!r} {need}")
        if not weight > 0:
            raise ValueError(f"data_mix entry {part!r}: the weight must be > 0")
        sources.append(Source(name, root, weight))
    if not sources:
        raise ValueError(f"--data_mix is empty: give {MIX_FORMAT}")
    return tuple(sources)


def label_offsets(class_lists: list[list[str]]) -> tuple[list[int], int]:
    """Each source's offset into one label space, and its size: sources with the same class names
    share their labels (the demo's clips and images), the others get their own range."""
    offsets, first, total = [], {}, 0
    for classes in class_lists:
        key = tuple(classes)
        if key not in first:
            first[key], total = total, total + len(classes)
        offsets.append(first[key])
    return offsets, total


class Mixture(Dataset):
    """The sources' items at the shape of their bucket, keyed ``(source, bucket, index, epoch,
    step, row)`` by MixtureBatches. Labels live in one space (label_offsets); unlabelled items
    (-1) stay -1, which class-conditional stage 2 trains as the null class."""

    def __init__(self, datasets, names, buckets, seed: int = 0):
        self.datasets, self.names, self.buckets, self.seed = (
            list(datasets),
            list(names),
            buckets,
            seed,
        )
        self.groups, self.skipped = [], {}
        for name, dataset in zip(self.names, self.datasets):
            assigned = assign_buckets(dataset.shapes(), buckets)
            self.groups.append([np.flatnonzero(assigned == b) for b in range(len(buckets))])
            self.skipped[name] = int((assigned < 0).sum())
            if self.skipped[name]:
                warnings.warn(
                    f"{name}: {self.skipped[name]} of {len(assigned)} examples are too short or "
                    f"too small for every bucket ({', '.join(b.name for b in buckets)}); skipped",
                    BadFileWarning,
                    stacklevel=2,
                )
        self.offsets, self.num_classes = label_offsets(
            [list(getattr(d, "classes", [])) for d in self.datasets]
        )

    def plan(self, weights, world: int) -> BatchPlan:
        return BatchPlan(self.groups, weights, self.buckets, world, self.seed)

    def bucket_counts(self) -> dict[str, dict[str, int]]:
        """``{source: {bucket name: examples}}``: what the assignment made of each source."""
        return {
            name: {b.name: len(g) for b, g in zip(self.buckets, groups)}
            for name, groups in zip(self.names, self.groups)
        }

    def __len__(self) -> int:
        return sum(len(g) for groups in self.groups for g in groups)

    def __getitem__(self, key) -> tuple[torch.Tensor, int]:
        source, bucket, index, epoch, step, row = key
        dataset, group = self.datasets[source], self.groups[source][bucket]
        rng = np.random.default_rng((self.seed, epoch, step, row))
        shape = self.buckets[bucket].shape
        bad = getattr(dataset, "_bad", None)
        if bad is None:
            video, label = dataset.load_shaped(index, shape, rng)
        else:  # a bad file: the next good one of the same bucket, as FileDataset does
            start = int(np.searchsorted(group, index))
            for i in (group[(start + k) % len(group)] for k in range(len(group))):
                if dataset.paths[i] in bad.reasons:
                    continue
                try:
                    video, label = dataset.load_shaped(int(i), shape, rng)
                    break
                except dataset.read_errors as error:
                    bad.add(dataset.paths[i], str(error))
                    bad.check()
            else:
                raise TooManyBadFilesError(
                    f"no file of bucket {shape} of {self.names[source]} reads"
                )
        return video, (label + self.offsets[source] if label >= 0 else -1)


class MixtureBatches(Sampler):
    """This process's rows of the plan's global batches from ``start`` to the end of the epoch:
    process ``rank`` takes rows ``rank * batch_size`` onwards of each step's bucket batch."""

    def __init__(self, plan: BatchPlan, rank: int):
        self.plan, self.rank, self.epoch, self.start = plan, rank, 0, 0

    def set_position(self, epoch: int, start: int) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.plan.steps_per_epoch - self.start

    def __iter__(self):
        for step in range(self.start, self.plan.steps_per_epoch):
            planned = self.plan.step(self.epoch, step)
            size = self.plan.buckets[planned.bucket].batch_size
            rows = range(self.rank * size, (self.rank + 1) * size)
            yield [
                (planned.source, planned.bucket, int(planned.indices[r]), self.epoch, step, r)
                for r in rows
            ]
