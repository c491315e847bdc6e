"""The CPU's fused optimizers compute what torch's reference optimizers compute, and checkpoint like them."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from wgan.config import parse_section
from wgan.models.networks import build_models
from wgan.progress import divergence_fix
from wgan.training.optim import FusedRMSprop, make_optimizer
from wgan.training.step import WGANStep

SHAPES = [(64, 49), (64,), (1, 64), (1,)]


def _params(seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g) * 0.05) for s in SHAPES]


def _run(opt: torch.optim.Optimizer, params: list[torch.nn.Parameter], steps: int, first: int = 0) -> None:
    """``steps`` updates with gradients drawn from a stream seeded by the step number (same on every run)."""
    for i in range(first, first + steps):
        g = torch.Generator().manual_seed(1000 + i)
        for p in params:
            p.grad = torch.randn(p.shape, generator=g) * 10.0 ** float(torch.randint(-6, 0, (), generator=g))
        opt.step()


@pytest.mark.parametrize(("lr", "alpha", "eps"), [(5e-5, 0.99, 1e-8), (1e-2, 0.9, 1e-6), (1e-3, 0.0, 1e-8)])
def test_fused_rmsprop_matches_torch_rmsprop(lr: float, alpha: float, eps: float) -> None:
    ours, theirs = _params(), _params()
    fused, reference = FusedRMSprop(ours, lr, alpha, eps), torch.optim.RMSprop(theirs, lr=lr, alpha=alpha, eps=eps)
    start = [p.detach().clone() for p in ours]
    _run(fused, ours, 200)
    _run(reference, theirs, 200)
    for a, b, s in zip(ours, theirs, start, strict=True):
        assert not torch.equal(a, s)  # the parameters moved...
        # ...by what RMSprop moves them, to float rounding (the kernel orders its multiplies differently)
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(fused.state[a]["square_avg"], reference.state[b]["square_avg"], rtol=1e-5, atol=0)


def test_uninitialized_memory_never_reaches_the_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel reads its exp_avg buffer (times beta1 = 0): a NaN left there by the allocator would poison p."""
    real_empty_like = torch.empty_like
    monkeypatch.setattr(torch, "empty_like", lambda t, **kw: real_empty_like(t, **kw).fill_(math.nan))
    params = _params()
    _run(FusedRMSprop(params, lr=1e-3), params, 3)
    assert all(bool(torch.isfinite(p).all()) for p in params)


def test_fused_rmsprop_first_step_is_exact() -> None:
    """One step from zero state, by hand: ``p - lr * g / (sqrt((1 - alpha) * g^2) + eps)``."""
    (p,) = _params()[:1]
    before = p.detach().clone()
    p.grad = torch.full_like(p, 0.25)
    FusedRMSprop([p], lr=0.1, alpha=0.75, eps=1e-8).step()
    expected = before - 0.1 * 0.25 / (torch.sqrt(torch.tensor(0.25 * 0.25 * 0.25)) + 1e-8)
    torch.testing.assert_close(p.detach(), expected, rtol=1e-6, atol=0)


def test_fused_rmsprop_resumes_from_its_state_dict_bit_identically() -> None:
    straight = _params()
    opt = FusedRMSprop(straight, lr=1e-3)
    _run(opt, straight, 30)

    first = _params()
    opt_a = FusedRMSprop(first, lr=1e-3)
    _run(opt_a, first, 12)
    saved = opt_a.state_dict()
    assert sorted(saved["state"][0]) == ["square_avg"]  # RMSprop's state, nothing of the kernel's scratch
    resumed = [torch.nn.Parameter(p.detach().clone()) for p in first]
    opt_b = FusedRMSprop(resumed, lr=1e-3)
    opt_b.load_state_dict(saved)
    _run(opt_b, resumed, 18, first=12)
    assert all(torch.equal(a, b) for a, b in zip(resumed, straight, strict=True))


def test_fused_rmsprop_skips_parameters_without_gradients_and_rejects_bad_settings() -> None:
    a, b = _params()[:2]
    b_before = b.detach().clone()
    a.grad = torch.ones_like(a)
    FusedRMSprop([a, b], lr=1e-3).step()  # b has no gradient: untouched, no state
    assert torch.equal(b.detach(), b_before)
    with pytest.raises(ValueError, match="alpha"):
        FusedRMSprop([a], lr=1e-3, alpha=1.0)


@pytest.mark.parametrize(
    ("section", "expected"),
    [({}, FusedRMSprop), ({"optimizer": "adam", "loss": "wgan-gp"}, torch.optim.Adam)],
    ids=["rmsprop", "adam"],
)
def test_make_optimizer_picks_fused_kernels_on_the_cpu(section: dict[str, Any], expected: type) -> None:
    cfg = parse_section("train", {"lr": 2e-4, **section})
    opt = make_optimizer(cfg, _params(), torch.device("cpu"), cfg.lr)
    assert type(opt) is expected
    assert opt.param_groups[0]["lr"] == 2e-4
    if expected is torch.optim.Adam:
        assert opt.param_groups[0]["fused"] is True
        assert opt.param_groups[0]["betas"] == (0.5, 0.9)


@pytest.mark.parametrize(("critic_lr", "expected"), [(0.0, 1e-4), (4e-4, 4e-4)])
def test_the_critic_trains_at_critic_lr_and_the_generator_at_lr(critic_lr: float, expected: float) -> None:
    """``train.critic_lr`` (two time-scales) sets the critic's optimizer only; 0 means ``train.lr``."""
    cfg = parse_section("train", {"lr": 1e-4, "critic_lr": critic_lr, "optimizer": "adam", "loss": "wgan-gp"})
    generator, critic = build_models(cfg, torch.device("cpu"))
    step = WGANStep(cfg, generator, critic, torch.Generator().manual_seed(0))
    assert [g["lr"] for g in step.opt_g.param_groups] == [1e-4]
    assert [g["lr"] for g in step.opt_d.param_groups] == [expected]


def test_a_diverged_run_is_told_to_lower_both_rates_when_the_critic_has_its_own() -> None:
    base = {"loss": "wgan-gp", "optimizer": "adam", "lr": 1e-4}
    assert divergence_fix(parse_section("train", base)).startswith("lower train.lr (now 0.0001), or ")
    fix = divergence_fix(parse_section("train", {**base, "critic_lr": 2e-4}))
    assert fix.startswith("lower train.lr (now 0.0001) and train.critic_lr (now 0.0002), or lower train.gp_lambda")
