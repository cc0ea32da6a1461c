"""Fréchet distance and feature statistics against closed forms and independent references."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from ulvideo.evaluate.frechet import (
    FeatureStats,
    frechet_distance,
    grouped_distance,
    no_tf32,
    stats_distance,
)


def rotation(angle: float) -> np.ndarray:
    return np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])


def random_spd(rng: np.random.Generator, dim: int) -> np.ndarray:
    a = rng.standard_normal((dim, dim))
    return a @ a.T / dim + 0.1 * np.eye(dim)


def test_two_dimensional_non_commuting_covariances_match_closed_form():
    cov1 = np.array([[2.0, 0.5], [0.5, 1.0]])
    r = rotation(0.5)
    cov2 = r @ np.diag([3.0, 0.2]) @ r.T
    assert not np.allclose(cov1 @ cov2, cov2 @ cov1)
    mean1, mean2 = np.array([1.0, -2.0]), np.array([0.5, 0.25])
    # 2x2: tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)) for M with positive eigenvalues
    product = cov1 @ cov2
    trace_sqrt = math.sqrt(np.trace(product) + 2 * math.sqrt(np.linalg.det(product)))
    expected = np.sum((mean1 - mean2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * trace_sqrt
    assert frechet_distance(mean1, cov1, mean2, cov2) == pytest.approx(expected, rel=1e-12)


def test_diagonal_covariances_match_closed_form():
    a, b = np.array([1.0, 4.0, 0.25, 9.0, 2.0]), np.array([4.0, 1.0, 1.0, 9.0, 0.5])
    mean1, mean2 = np.arange(5.0), np.arange(5.0)[::-1].copy()
    expected = np.sum((mean1 - mean2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mean1, np.diag(a), mean2, np.diag(b)) == pytest.approx(
        expected, rel=1e-12
    )


def test_general_covariances_match_scipy_sqrtm():
    rng = np.random.default_rng(0)
    cov1, cov2 = random_spd(rng, 40), random_spd(rng, 40)
    mean1, mean2 = rng.standard_normal(40), rng.standard_normal(40)
    root = scipy.linalg.sqrtm(cov1 @ cov2).real
    expected = np.sum((mean1 - mean2) ** 2) + np.trace(cov1 + cov2 - 2 * root)
    assert frechet_distance(mean1, cov1, mean2, cov2) == pytest.approx(expected, rel=1e-9)


def test_sampled_gaussians_approach_the_population_distance():
    rng = np.random.default_rng(1)
    cov1 = np.array([[1.0, 0.6, 0.0], [0.6, 2.0, -0.3], [0.0, -0.3, 0.5]])
    cov2 = np.array([[0.5, 0.0, 0.2], [0.0, 1.0, 0.0], [0.2, 0.0, 3.0]])
    mean1, mean2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    exact = frechet_distance(mean1, cov1, mean2, cov2)
    x = rng.multivariate_normal(mean1, cov1, size=200_000)
    y = rng.multivariate_normal(mean2, cov2, size=200_000)
    sampled = stats_distance(FeatureStats.from_features(x), FeatureStats.from_features(y))
    assert exact > 5
    assert sampled == pytest.approx(exact, rel=0.01)


def test_fewer_samples_than_dimensions_match_the_nuclear_norm_form():
    # With centred data A (n x d), S = A^T A / (n - 1); the nonzero eigenvalues of S1 S2 are the
    # squared singular values of A1 A2^T / sqrt((n1 - 1)(n2 - 1)): a route free of d x d roots.
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((20, 64)), rng.standard_normal((30, 64)) * 2 + 1
    a1, a2 = x - x.mean(0), y - y.mean(0)
    trace_sqrt = np.linalg.svd(a1 @ a2.T, compute_uv=False).sum() / math.sqrt(19 * 29)
    cov1, cov2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    expected = (
        np.sum((x.mean(0) - y.mean(0)) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * trace_sqrt
    )
    distance = stats_distance(FeatureStats.from_features(x), FeatureStats.from_features(y))
    assert math.isfinite(distance)
    assert distance == pytest.approx(expected, rel=1e-9)


def test_distance_of_a_set_to_itself_is_zero_and_distance_is_symmetric():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((100, 400)) * 3 + 10  # rank-deficient, like 100 I3D logits
    y = rng.standard_normal((150, 400)) + 9
    sx, sy = FeatureStats.from_features(x), FeatureStats.from_features(y)
    scale = np.trace(sx.cov.numpy())
    assert abs(stats_distance(sx, sx)) < 1e-9 * scale
    assert stats_distance(sx, sy) == pytest.approx(stats_distance(sy, sx), rel=1e-10)
    assert stats_distance(sx, sy) > 0.1 * scale


def test_streaming_stats_equal_batch_stats_and_numpy():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((257, 12)) * rng.uniform(0.1, 10, 12) + 1000  # large offset
    stats = FeatureStats(12)
    for chunk in np.array_split(x, [1, 2, 50, 51, 200]):
        stats.update(torch.from_numpy(chunk))
    assert stats.count == 257
    np.testing.assert_allclose(stats.mean.numpy(), x.mean(0), rtol=1e-13)
    np.testing.assert_allclose(stats.cov.numpy(), np.cov(x, rowvar=False), rtol=1e-9, atol=1e-9)
    batch = FeatureStats.from_features(x)
    np.testing.assert_allclose(stats.scatter.numpy(), batch.scatter.numpy(), rtol=1e-9, atol=1e-9)


def test_stats_merged_across_two_shards_equal_single_pass():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((300, 8)) @ rng.standard_normal((8, 8)) + 5
    single = FeatureStats.from_features(x)
    merged = FeatureStats.from_features(x[:123]).merge(FeatureStats.from_features(x[123:]))
    assert merged.count == single.count
    np.testing.assert_allclose(merged.mean.numpy(), single.mean.numpy(), rtol=1e-13)
    np.testing.assert_allclose(merged.cov.numpy(), single.cov.numpy(), rtol=1e-10, atol=1e-12)
    restored = FeatureStats.from_arrays(merged.to_arrays())
    assert stats_distance(restored, single) == pytest.approx(0, abs=1e-9)


def test_grouped_distance_reports_mean_and_population_std_of_groups():
    rng = np.random.default_rng(6)
    real, fake = (
        rng.standard_normal((60, 5)),
        rng.standard_normal((60, 5)) + np.linspace(0, 1, 60)[:, None],
    )
    result = grouped_distance(torch.from_numpy(real), torch.from_numpy(fake), groups=3)
    values = [
        stats_distance(
            FeatureStats.from_features(real[i : i + 20]),
            FeatureStats.from_features(fake[i : i + 20]),
        )
        for i in (0, 20, 40)
    ]
    assert result["values"] == pytest.approx(values, rel=1e-12)
    assert result["mean"] == pytest.approx(np.mean(values), rel=1e-12)
    assert result["std"] == pytest.approx(np.std(values), rel=1e-12)
    assert values[2] > values[0]  # the later groups drift further

    shared = grouped_distance(FeatureStats.from_features(real), torch.from_numpy(fake), groups=2)
    whole = FeatureStats.from_features(real)
    assert shared["values"][1] == pytest.approx(
        stats_distance(whole, FeatureStats.from_features(fake[30:]))
    )


def test_statistics_errors_name_the_problem():
    with pytest.raises(ValueError, match="at least 2 samples"):
        _ = FeatureStats.from_features(np.ones((1, 3))).cov
    with pytest.raises(ValueError, match="dimensions"):
        FeatureStats(3).update(np.ones((4, 5)))
    with pytest.raises(ValueError, match="mismatched Gaussians"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="3 equal groups"):
        grouped_distance(torch.ones(10, 2), torch.ones(10, 2), groups=3)


def test_no_tf32_turns_tf32_off_and_restores_it():
    conv = torch.backends.cudnn.conv
    before = conv.fp32_precision
    with no_tf32():
        assert conv.fp32_precision == "ieee"
        assert torch.backends.cuda.matmul.fp32_precision == "ieee"
    assert conv.fp32_precision == before
