"""FID and KID cross-checked against torchmetrics (a dev dependency) on the same features.

wgan.evaluation.metrics stays hand-written: torchmetrics' metric classes wrap a feature extractor and accumulate state,
while the evaluate stage scores precomputed classifier features and reuses the real-data statistics across
experiments. Agreement here means neither implementation is trusted alone.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from wgan.evaluation.metrics import fid, kid


class Features(nn.Module):
    """Hands torchmetrics our features as if they were its extractor's output."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.num_features = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def feature_sets(seed: int, n: int = 300, d: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=gen)
    real = torch.randn(n, d, generator=gen) @ mix
    fake = torch.randn(n, d, generator=gen) @ mix * 1.3 + 0.5
    return real.double(), fake.double()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fid_matches_torchmetrics(seed: int):
    real, fake = feature_sets(seed)
    ref = FrechetInceptionDistance(feature=Features(real.shape[1])).double()
    ref.update(real, real=True)
    ref.update(fake, real=False)
    assert fid(real, fake) == pytest.approx(float(ref.compute()), rel=1e-6)


def test_fid_with_a_singular_covariance_matches_torchmetrics():
    real, fake = feature_sets(3)
    real[:, -4:] = 0  # dead units, as a ReLU feature layer has
    ref = FrechetInceptionDistance(feature=Features(real.shape[1])).double()
    ref.update(real, real=True)
    ref.update(fake, real=False)
    assert fid(real, fake) == pytest.approx(float(ref.compute()), rel=1e-4)


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save")
@pytest.mark.parametrize("seed", [0, 1])
def test_kid_matches_torchmetrics_on_whole_sets(seed: int):
    real, fake = feature_sets(seed, n=200)
    # one subset of every sample: both are then the same unbiased MMD^2 with the kernel (x.y / d + 1)^3
    ref = KernelInceptionDistance(feature=Features(real.shape[1]), subsets=1, subset_size=len(real)).double()
    ref.update(real, real=True)
    ref.update(fake, real=False)
    ref_mean, _ = ref.compute()
    ours, std = kid(real, fake, n_subsets=1, subset_size=len(real))
    assert ours == pytest.approx(float(ref_mean), rel=1e-6) and std == 0.0
