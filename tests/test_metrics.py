"""The metric math on synthetic data with known answers (scipy is the independent reference)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from wgan.evaluation import metrics


def _gaussian(n: int, mean: torch.Tensor, cov: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, len(mean), generator=g, dtype=torch.float64)
    return mean + z @ torch.linalg.cholesky(cov).T


def _random_cov(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


def _scipy_fid(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """pytorch-fid's formula: scipy sqrtm of the product, with its eps * I retry and real part."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(s1)) * 1e-6
        covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


@pytest.mark.parametrize("singular", [False, True])
def test_sqrtm_psd_matches_scipy(singular: bool) -> None:
    cov = _random_cov(12, seed=1)
    if singular:  # rank 6: the square root must stay finite and exact
        basis = torch.linalg.qr(cov)[0][:, :6]
        cov = basis @ torch.diag(torch.arange(1.0, 7.0, dtype=torch.float64)) @ basis.T
    root = metrics.sqrtm_psd(cov)
    assert torch.allclose(root @ root, cov, atol=1e-10)
    expected = scipy.linalg.sqrtm(cov.numpy()).real
    np.testing.assert_allclose(root.numpy(), expected, atol=1e-6)


def test_fid_matches_scipy_reference_on_gaussians() -> None:
    d = 8
    a = _gaussian(4000, torch.zeros(d, dtype=torch.float64), _random_cov(d, 2), seed=3)
    b = _gaussian(4000, torch.full((d,), 0.5, dtype=torch.float64), _random_cov(d, 4), seed=5)
    mu1, s1 = metrics.feature_stats(a)
    mu2, s2 = metrics.feature_stats(b)
    np.testing.assert_allclose(s1.numpy(), np.cov(a.numpy(), rowvar=False), rtol=1e-12)
    expected = _scipy_fid(mu1.numpy(), s1.numpy(), mu2.numpy(), s2.numpy())
    assert expected > 1.0
    assert metrics.fid(a, b) == pytest.approx(expected, rel=1e-8)
    assert metrics.fid(b, a) == pytest.approx(expected, rel=1e-8)


def test_fid_closed_form_for_diagonal_covariances_including_singular() -> None:
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0, 0.0]), torch.tensor([1.0, 1.0, 0.0, 3.0])
    v1, v2 = torch.tensor([4.0, 1.0, 0.0, 0.0]), torch.tensor([1.0, 9.0, 2.0, 0.0])  # zero variances: singular
    expected = float(((mu1 - mu2) ** 2).sum() + ((v1.sqrt() - v2.sqrt()) ** 2).sum())  # 14 + (1 + 4 + 2)
    got = metrics.frechet_distance(mu1, torch.diag(v1), mu2, torch.diag(v2))
    assert got == pytest.approx(expected, abs=1e-9)
    assert got == pytest.approx(21.0, abs=1e-9)


def test_fid_of_dead_relu_features_is_finite_and_zero_against_itself() -> None:
    g = torch.Generator().manual_seed(0)
    feats = torch.relu(torch.randn(50, 64, generator=g))  # 50 < 64 samples: rank-deficient covariance
    feats[:, :10] = 0  # units that never fire
    other = torch.relu(torch.randn(60, 64, generator=g) + 0.3)
    assert torch.linalg.matrix_rank(metrics.feature_stats(feats)[1]) < 64
    assert metrics.fid(feats, feats) == pytest.approx(0.0, abs=1e-10)
    value = metrics.fid(feats, other)
    assert math.isfinite(value) and value > 0
    assert metrics.fid(other, feats) == pytest.approx(value, rel=1e-12)


def test_kid_is_zero_for_identical_sets_and_positive_for_shifted_ones() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(400, 16, generator=g)
    b = torch.randn(400, 16, generator=g)
    same_mean, same_std = metrics.kid(a, a.clone(), n_subsets=10, subset_size=100)
    assert abs(same_mean) < 3 * same_std + 1e-3 and same_std > 0
    # two samples of one distribution: the unbiased estimate is centered on 0
    assert abs(metrics.kid(a, b, n_subsets=20, subset_size=200)[0]) < 0.02
    shifted, _ = metrics.kid(a, b + 1.0, n_subsets=20, subset_size=200)
    assert shifted > 0.5
    assert metrics.kid(a, b + 1.0, 20, 200, seed=3) == metrics.kid(a, b + 1.0, 20, 200, seed=3)


def test_kid_single_subset_matches_direct_formula() -> None:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(30, 5, generator=g, dtype=torch.float64), torch.randn(30, 5, generator=g, dtype=torch.float64)
    k = lambda p, q: (p @ q.T / 5 + 1) ** 3  # noqa: E731
    m = 30
    expected = (
        (k(x, x).sum() - k(x, x).trace()) / (m * (m - 1))
        + (k(y, y).sum() - k(y, y).trace()) / (m * (m - 1))
        - 2 * k(x, y).mean()
    )
    mean, std = metrics.kid(x, y, n_subsets=1, subset_size=30)  # the whole sets, in some order
    assert mean == pytest.approx(float(expected), rel=1e-10) and std == 0.0
    with pytest.raises(ValueError, match="subset_size"):
        metrics.kid(x, y, n_subsets=1, subset_size=31)


def test_precision_recall_on_point_clouds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "DIST_CHUNK", 37)  # several chunks, one ragged
    g = torch.Generator().manual_seed(0)
    cluster_a = torch.randn(200, 4, generator=g)
    cluster_b = torch.randn(200, 4, generator=g) + 50.0
    assert metrics.precision_recall(cluster_a, cluster_a.clone(), k=3) == (1.0, 1.0)
    assert metrics.precision_recall(cluster_a, cluster_b, k=3) == (0.0, 0.0)
    # samples from one of two real modes: all realistic (precision 1), half the modes (recall 0.5)
    real = torch.cat([cluster_a, cluster_b])
    fake = torch.randn(300, 4, generator=g)
    precision, recall = metrics.precision_recall(real, fake, k=3)
    assert precision > 0.9
    assert 0.4 < recall <= 0.5
    radii = metrics.knn_radii(real, 3)
    assert metrics.precision_recall(real, fake, k=3, real_radii=radii) == (precision, recall)


def test_knn_radii_and_median_nn_distance_on_a_line() -> None:
    line = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    assert metrics.knn_radii(line, 1).tolist() == [1.0, 1.0, 2.0, 4.0]
    assert metrics.knn_radii(line, 2).tolist() == [3.0, 2.0, 3.0, 6.0]
    with pytest.raises(ValueError, match="k = 4"):
        metrics.knn_radii(line, 4)
    assert metrics.median_nn_distance(torch.tensor([[0.5], [3.0], [10.0]]), line) == 0.5


def test_classifier_score_bounds() -> None:
    confident = torch.eye(10).repeat(5, 1)  # every class, each predicted with certainty
    assert metrics.classifier_score(confident) == pytest.approx(10.0)
    assert metrics.classifier_score(torch.eye(10)[[3] * 50]) == pytest.approx(1.0)  # one class only
    assert metrics.classifier_score(torch.full((50, 10), 0.1)) == pytest.approx(1.0)  # never sure
    two = torch.tensor([[0.9, 0.1], [0.1, 0.9]])
    kl = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    assert metrics.classifier_score(two) == pytest.approx(math.exp(kl))


def test_coverage_counts_classes_and_compares_shares() -> None:
    real = torch.full((10,), 0.1, dtype=torch.float64)
    probs = torch.zeros(1000, 10)
    probs[:600, 0] = 1.0
    probs[600:995, 1] = 0.95
    probs[600:995, 2] = 0.05
    probs[995:, 2] = 0.6  # 0.5% of the samples: below the 1% threshold
    probs[995:, 3] = 0.4
    cov = metrics.coverage(probs, real)
    assert cov.shares.tolist() == pytest.approx([0.6, 0.395, 0.005] + [0.0] * 7)
    assert cov.classes_covered == 2
    assert cov.tv == pytest.approx((0.5 + 0.295 + 0.095 + 0.7) / 2)
    expected_kl = sum(s * math.log(s / 0.1) for s in (0.6, 0.395, 0.005))
    assert cov.kl == pytest.approx(expected_kl)
    assert cov.confident == pytest.approx(0.995)
    uniform = metrics.coverage(torch.eye(10).repeat(3, 1), real)
    assert (uniform.classes_covered, uniform.kl, uniform.tv, uniform.confident) == (10, 0.0, 0.0, 1.0)
