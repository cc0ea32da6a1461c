"""Skip bad files with a warning naming each, and stop once too many of them are bad."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TypeVar

import torch
from torch.utils.data import Dataset

from .transforms import item_rng

T = TypeVar("T")


class BadFileWarning(UserWarning):
    """A data file was skipped."""


class TooManyBadFilesError(RuntimeError):
    """More than the allowed fraction of a dataset's files is bad."""


class BadFiles:
    """The skipped files of a dataset of ``total`` files, as ``{path: reason}``.

    Each addition warns (the first ``max_warnings`` by name, then one summary); ``check`` raises
    TooManyBadFilesError once more than ``max_fraction * total`` are bad.
    """

    def __init__(self, total: int, max_fraction: float, what: str, max_warnings: int = 20):
        if not 0.0 <= max_fraction <= 1.0:
            raise ValueError(f"max_bad_fraction must lie in [0, 1], got {max_fraction}")
        self.total, self.max_fraction, self.what = total, max_fraction, what
        self.max_warnings = max_warnings
        self.reasons: dict[str, str] = {}

    def add(self, path: str, reason: str) -> None:
        if path in self.reasons:
            return
        self.reasons[path] = reason
        count = len(self.reasons)
        if count <= self.max_warnings:
            warnings.warn(f"skipping {self.what} {path}: {reason}", BadFileWarning, stacklevel=2)
        elif count == self.max_warnings + 1:
            warnings.warn(
                f"more than {self.max_warnings} bad {self.what}s; the rest are skipped silently "
                "(see the dataset's .bad_files)",
                BadFileWarning,
                stacklevel=2,
            )

    def check(self) -> None:
        """Raise if more than the allowed fraction of files is bad."""
        if len(self.reasons) > self.max_fraction * self.total:
            examples = "; ".join(f"{p}: {r}" for p, r in list(self.reasons.items())[:5])
            raise TooManyBadFilesError(
                f"{len(self.reasons)} of {self.total} {self.what}s are bad, more than the allowed "
                f"fraction {self.max_fraction} (max_bad_fraction). Examples: {examples}. Fix or "
                "remove these files, or raise max_bad_fraction."
            )

    def load_first_good(
        self,
        index: int,
        paths: list[str],
        load: Callable[[int], T],
        errors: type[Exception] | tuple[type[Exception], ...],
    ) -> T:
        """``load(i)`` for the first ``i = index, index + 1, ...`` (cyclically) whose file is not bad.
        A load raising one of ``errors`` marks its file bad and moves on, deterministically."""
        for offset in range(len(paths)):
            i = (index + offset) % len(paths)
            if paths[i] in self.reasons:
                continue
            try:
                return load(i)
            except errors as error:
                self.add(paths[i], str(error))
                self.check()
        raise TooManyBadFilesError(f"none of the {len(paths)} {self.what}s could be read")

    def __len__(self) -> int:
        return len(self.reasons)


class FileDataset(Dataset):
    """A labelled dataset of files that skips bad ones. Subclasses set ``paths``, ``classes``,
    ``seed``, ``epoch`` and ``_bad`` (a BadFiles), and define ``_load(index, rng)`` and the
    exceptions ``read_errors`` that mark a file bad."""

    read_errors: type[Exception] | tuple[type[Exception], ...] = OSError

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def bad_files(self) -> dict[str, str]:
        """``{path: reason}`` of every skipped file (read failures only as seen by this process)."""
        return dict(self._bad.reasons)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        rng = item_rng(self.seed, self.epoch, index)
        return self._bad.load_first_good(
            index, self.paths, lambda i: self._load(i, rng), self.read_errors
        )
