"""Fréchet distance between feature Gaussians, with streaming, mergeable float64 statistics.

FD = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr sqrt(S1 S2)   (Dowson & Landau, 1982; FID/FVD)

The covariances are unbiased (divided by N - 1), as in TF-GAN's `frechet_classifier_distance`, the
reference of the FVD numbers in the literature. `tr sqrt(S1 S2)` comes from the eigenvalues of the
symmetric PSD matrix `S1^1/2 S2 S1^1/2`, which has the same spectrum: no `scipy.linalg.sqrtm`, no
complex parts, and rank-deficient covariances (fewer samples than dimensions) stay exact.
"""

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor


def tf32_switches() -> list[tuple[object, str, object]]:
    """(object, attribute, full-precision value) for matmuls and cuDNN convolutions."""
    cuda = torch.backends.cuda.matmul
    if hasattr(torch.backends.cudnn, "conv"):  # torch >= 2.9 has per-backend precision flags
        return [
            (cuda, "fp32_precision", "ieee"),
            (torch.backends.cudnn.conv, "fp32_precision", "ieee"),
        ]
    return [(cuda, "allow_tf32", False), (torch.backends.cudnn, "allow_tf32", False)]


@contextlib.contextmanager
def no_tf32() -> Iterator[None]:
    """Full-precision float32 matmuls and convolutions within (TF32 changes FVD statistics)."""
    switches = tf32_switches()
    saved = [getattr(obj, name) for obj, name, _ in switches]
    for obj, name, value in switches:
        setattr(obj, name, value)
    try:
        yield
    finally:
        for (obj, name, _), value in zip(switches, saved):
            setattr(obj, name, value)


def as_float64(features: Tensor | np.ndarray) -> Tensor:
    features = torch.as_tensor(features).detach().to("cpu", torch.float64)
    if features.dim() != 2:
        raise ValueError(f"features must be N x D, got shape {list(features.shape)}")
    return features


class FeatureStats:
    """Streaming float64 count, mean and centred scatter matrix of D-dimensional features.

    `update` adds a batch and `merge` combines shards (e.g. one per process), both with the pairwise
    update of Chan, Golub & LeVeque (1979), so any split of the data gives the single-pass result.
    """

    def __init__(self, dim: int):
        self.count = 0
        self.mean = torch.zeros(dim, dtype=torch.float64)
        self.scatter = torch.zeros(dim, dim, dtype=torch.float64)  # sum of (x - mean)(x - mean)^T

    @classmethod
    def from_features(cls, features: Tensor | np.ndarray) -> "FeatureStats":
        features = as_float64(features)
        stats = cls(features.shape[1])
        stats.update(features)
        return stats

    @property
    def dim(self) -> int:
        return self.mean.shape[0]

    def update(self, features: Tensor | np.ndarray) -> "FeatureStats":
        features = as_float64(features)
        if features.shape[1] != self.dim:
            raise ValueError(
                f"features have {features.shape[1]} dimensions, these stats {self.dim}"
            )
        if len(features) == 0:
            return self
        batch = FeatureStats(self.dim)
        batch.count = len(features)
        batch.mean = features.mean(dim=0)
        centred = features - batch.mean
        batch.scatter = centred.T @ centred
        merged = self.merge(batch)
        self.count, self.mean, self.scatter = merged.count, merged.mean, merged.scatter
        return self

    def merge(self, other: "FeatureStats") -> "FeatureStats":
        # Chan et al.: M = M_a + M_b + delta delta^T n_a n_b / n, with delta = mean_b - mean_a
        if other.dim != self.dim:
            raise ValueError(f"cannot merge stats of {self.dim} and {other.dim} dimensions")
        merged = FeatureStats(self.dim)
        merged.count = self.count + other.count
        if merged.count == 0:
            return merged
        delta = other.mean - self.mean
        merged.mean = self.mean + delta * (other.count / merged.count)
        cross = torch.outer(delta, delta) * (self.count * other.count / merged.count)
        merged.scatter = self.scatter + other.scatter + cross
        return merged

    @property
    def cov(self) -> Tensor:
        """The unbiased covariance, `scatter / (N - 1)`."""
        if self.count < 2:
            raise ValueError(
                f"a covariance needs at least 2 samples, these stats hold {self.count}"
            )
        return self.scatter / (self.count - 1)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "count": np.array(self.count),
            "mean": self.mean.numpy(),
            "scatter": self.scatter.numpy(),
        }

    @classmethod
    def from_arrays(cls, arrays) -> "FeatureStats":
        stats = cls(len(arrays["mean"]))
        stats.count = int(arrays["count"])
        stats.mean = torch.as_tensor(np.asarray(arrays["mean"]), dtype=torch.float64)
        stats.scatter = torch.as_tensor(np.asarray(arrays["scatter"]), dtype=torch.float64)
        return stats


def psd_eigenvalues(matrix: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenvalues and vectors of a symmetric PSD matrix (symmetrised first). Eigenvalues below the
    numerical-rank tolerance `dim * eps * max` become 0, so that rounding noise of a rank-deficient
    matrix does not turn into `sqrt(noise)` terms."""
    eigenvalues, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    tolerance = len(matrix) * torch.finfo(matrix.dtype).eps * eigenvalues.abs().max()
    return torch.where(eigenvalues > tolerance, eigenvalues, 0), vectors


def trace_sqrt_product(cov1: Tensor, cov2: Tensor) -> Tensor:
    # tr sqrt(S1 S2) = sum sqrt(eig(S1^1/2 S2 S1^1/2)): similar matrices, the latter symmetric PSD
    eigenvalues, vectors = psd_eigenvalues(cov1)
    root = (vectors * eigenvalues.sqrt()) @ vectors.T
    return psd_eigenvalues(root @ cov2 @ root)[0].sqrt().sum()


def frechet_distance(mean1, cov1, mean2, cov2) -> float:
    """Fréchet distance between N(mean1, cov1) and N(mean2, cov2), in float64."""
    mean1, mean2 = (torch.as_tensor(m, dtype=torch.float64) for m in (mean1, mean2))
    cov1, cov2 = (torch.as_tensor(c, dtype=torch.float64) for c in (cov1, cov2))
    if (
        mean1.shape != mean2.shape
        or cov1.shape != cov2.shape
        or cov1.shape != (*mean1.shape, *mean1.shape)
    ):
        raise ValueError(
            f"mismatched Gaussians: means {list(mean1.shape)}, {list(mean2.shape)}; "
            f"covariances {list(cov1.shape)}, {list(cov2.shape)}"
        )
    with no_tf32():
        distance = (mean1 - mean2).square().sum() + cov1.trace() + cov2.trace()
        distance = distance - 2 * trace_sqrt_product(cov1, cov2)
    return float(distance)


def stats_distance(stats1: FeatureStats, stats2: FeatureStats) -> float:
    """Fréchet distance between the Gaussians fitted to two sets of features."""
    return frechet_distance(stats1.mean, stats1.cov, stats2.mean, stats2.cov)


def grouped_distance(real: Tensor | FeatureStats, fake: Tensor, groups: int) -> dict:
    """Mean ± std of the Fréchet distance over `groups` consecutive equal chunks (as in MAGVIT).

    `fake` (and `real`, when given as features) is split into chunks in order; chunk g of fake is
    compared with chunk g of real, or with all of `real` when it is given as FeatureStats. The std
    is the population std over groups (numpy's default, as in MAGVIT's FVD).
    """
    fake = as_float64(fake)
    if groups < 1 or len(fake) % groups:
        raise ValueError(f"cannot split {len(fake)} fake samples into {groups} equal groups")
    if isinstance(real, FeatureStats):
        real_groups = [real] * groups
    else:
        real = as_float64(real)
        if len(real) % groups:
            raise ValueError(f"cannot split {len(real)} real samples into {groups} equal groups")
        real_groups = [FeatureStats.from_features(c) for c in real.split(len(real) // groups)]
    values = [
        stats_distance(ref, FeatureStats.from_features(chunk))
        for ref, chunk in zip(real_groups, fake.split(len(fake) // groups), strict=True)
    ]
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "values": values}
