"""The WGAN objectives: critic and generator losses, weight clipping and the gradient penalty.

Conventions: the critic *minimizes* ``mean D(fake) - mean D(real)`` (it maximizes the
Wasserstein estimate ``mean D(real) - mean D(fake)``), the generator minimizes ``-mean D(G(z))``.
Scores are cast to float32 before reducing, so the losses stay float32 under bf16 autocast.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def wasserstein_estimate(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """``mean D(real) - mean D(fake)``: the critic's estimate of the Wasserstein-1 distance."""
    return d_real.float().mean() - d_fake.float().mean()


def critic_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """What the critic minimizes (without any penalty): the negated Wasserstein estimate."""
    return d_fake.float().mean() - d_real.float().mean()


def generator_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """``-mean D(G(z))``; ``d_fake`` must come from non-detached fakes so gradients reach G."""
    return -d_fake.float().mean()


def clip_weights_(params: Sequence[torch.Tensor], clip_value: float) -> None:
    """Clamp every tensor to ``[-clip_value, clip_value]`` in place (original WGAN's Lipschitz constraint).

    Uses the multi-tensor ``_foreach`` kernels: two calls in all instead of one per parameter.
    """
    with torch.no_grad():
        torch._foreach_clamp_min_(list(params), -clip_value)
        torch._foreach_clamp_max_(list(params), clip_value)


def mixing_weights(n: int, like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` interpolation weights ``eps ~ U[0, 1]`` shaped to broadcast over samples like ``like``.

    Drawn on the generator's device and moved, so a CPU stream can drive a GPU run (same numbers).
    """
    shape = (n,) + (1,) * (like.dim() - 1)
    device = generator.device if generator is not None else like.device
    return torch.rand(shape, device=device, dtype=like.dtype, generator=generator).to(like.device)


def penalty_points(
    real: torch.Tensor,
    fake: torch.Tensor,
    generator: torch.Generator | None = None,
    eps: torch.Tensor | None = None,
) -> torch.Tensor:
    """``x_hat = eps * real + (1 - eps) * fake`` with one ``eps ~ U[0, 1]`` per sample; requires grad.

    ``eps`` (from ``mixing_weights``) is drawn from ``generator`` unless given.
    """
    if eps is None:
        eps = mixing_weights(real.shape[0], real, generator)
    return torch.lerp(fake, real, eps).requires_grad_(True)


def gradient_penalty(
    critic: nn.Module, x_hat: torch.Tensor, weight: float, autocast: bool = False, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """``weight * mean_i (||grad_x D(x_hat_i)||_2 - 1)^2``, norm over each sample's flattened gradient.

    The gradient is built with ``create_graph=True`` so that the penalty can be backpropagated into
    the critic's parameters (a double backward). Only the forward runs under autocast (when asked):
    PyTorch recommends running backward passes, ``autograd.grad`` included, outside autocast.
    ``labels`` (a conditional critic's digits) are held fixed: the gradient is taken with respect to the image.
    """
    with torch.autocast(x_hat.device.type, dtype=torch.bfloat16, enabled=autocast):
        scores = critic(x_hat) if labels is None else critic(x_hat, labels)
    (grad,) = torch.autograd.grad(scores.float().sum(), x_hat, create_graph=True)
    norms = torch.linalg.vector_norm(grad.float().flatten(1), ord=2, dim=1)
    return weight * (norms - 1.0).square().mean()
