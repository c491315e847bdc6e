"""The WGAN objectives: loss values, weight clipping and the gradient penalty (fp32 and bf16)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from wgan.training import losses


class LinearCritic(nn.Module):
    """D(x) = w . flatten(x) + b: its input gradient is w everywhere, so ||grad|| = ||w||."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.linear = nn.Linear(weight.numel(), 1)
        with torch.no_grad():
            self.linear.weight.copy_(weight.reshape(1, -1))
            self.linear.bias.fill_(0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


def _unit_weight(scale: float) -> torch.Tensor:
    w = torch.randn(784, generator=torch.Generator().manual_seed(1), dtype=torch.float64).float()
    return scale * w / w.norm()


def _pair(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 28, 28, generator=g) * 2 - 1, torch.rand(n, 1, 28, 28, generator=g) * 2 - 1


def test_loss_values_and_signs() -> None:
    d_real = torch.tensor([[1.0], [3.0]])
    d_fake = torch.tensor([[-1.0], [0.0]])
    assert losses.critic_loss(d_real, d_fake).item() == pytest.approx(-2.5)
    assert losses.wasserstein_estimate(d_real, d_fake).item() == pytest.approx(2.5)
    assert losses.generator_loss(d_fake).item() == pytest.approx(0.5)
    assert losses.critic_loss(d_real.bfloat16(), d_fake.bfloat16()).dtype == torch.float32


def test_clip_weights_clamps_every_parameter_in_place() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 8), nn.Linear(8, 1))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(100)
    params = list(model.parameters())
    before = [p.detach().clone() for p in params]
    losses.clip_weights_(params, 0.01)
    for p, old in zip(params, before, strict=True):
        assert p.abs().max().item() <= 0.01
        assert torch.equal(p.detach(), old.clamp(-0.01, 0.01))
    assert any((old.abs() > 0.01).any() for old in before)  # the clamp had something to do


def test_interpolate_uses_one_coefficient_per_sample() -> None:
    real, fake = torch.ones(8, 1, 28, 28), -torch.ones(8, 1, 28, 28)
    x_hat = losses.penalty_points(real, fake, torch.Generator().manual_seed(3))
    assert x_hat.requires_grad and x_hat.shape == real.shape
    eps = ((x_hat.detach() + 1) / 2).flatten(1)  # x_hat = eps * 1 + (1 - eps) * -1
    assert torch.equal(eps, eps[:, :1].expand_as(eps))  # one coefficient within a sample
    assert eps[:, 0].unique().numel() == 8  # a different one for each sample
    assert ((eps >= 0) & (eps <= 1)).all()


def test_gradient_penalty_is_zero_for_a_unit_norm_linear_critic() -> None:
    real, fake = _pair()
    critic = LinearCritic(_unit_weight(1.0))
    gp = losses.gradient_penalty(critic, losses.penalty_points(real, fake), weight=10.0)
    assert gp.item() == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_gradient_penalty_is_positive_otherwise(scale: float) -> None:
    real, fake = _pair()
    critic = LinearCritic(_unit_weight(scale))
    gp = losses.gradient_penalty(critic, losses.penalty_points(real, fake), weight=10.0)
    assert gp.item() == pytest.approx(10.0 * (scale - 1.0) ** 2, rel=1e-5)


def _penalty_grads(critic: nn.Module, x_hat: torch.Tensor, bf16: bool) -> tuple[float, list[torch.Tensor]]:
    critic.zero_grad(set_to_none=True)
    gp = losses.gradient_penalty(critic, x_hat, weight=10.0, autocast=bf16)
    gp.backward()
    return gp.item(), [p.grad.clone() for p in critic.parameters() if p.dim() > 1]


def test_gradient_penalty_double_backward_reaches_the_critic_in_fp32_and_bf16() -> None:
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.LeakyReLU(0.2, inplace=True), nn.Linear(64, 1))
    real, fake = _pair()
    x_hat = losses.penalty_points(real, fake, torch.Generator().manual_seed(5))
    gp32, grads32 = _penalty_grads(critic, x_hat, bf16=False)
    gp16, grads16 = _penalty_grads(critic, x_hat, bf16=True)
    assert gp32 > 0 and math.isfinite(gp16)
    assert gp16 == pytest.approx(gp32, rel=0.05)
    for g32, g16 in zip(grads32, grads16, strict=True):
        assert g32.abs().sum() > 0  # the penalty depends on every weight matrix through the double backward
        assert torch.isfinite(g16).all()
        cosine = torch.nn.functional.cosine_similarity(g32.flatten(), g16.flatten(), dim=0)
        assert cosine > 0.98
