"""The averaged generator (``train.ema_decay`` > 0): an exponential moving average of G's weights, for sampling.

Yazıcı et al., "The Unusual Effectiveness of Averaging in GAN Training" (ICLR 2019); StyleGAN's ``G_ema``.
After every generator step (``wgan.training.step``):

    average <- ema_decay * average + (1 - ema_decay) * live        (one ``torch._foreach_lerp_`` over G's weights)

A later start (``train.ema_start`` epochs, diffusers' ``update_after_step``): before it the average is a copy of
the live generator, so it forgets the early, poor weights; measured in docs/results.md ("The 100-epoch recipe").

The live generator trains exactly as without averaging (the average reads its weights, never writes them, and
draws from no training random stream), so the run's training is bit-identical with any ``ema_decay``.

BatchNorm: the live generator's running statistics were gathered for the live weights, not the average's.
Before every use (a snapshot, the final model) the average's statistics are recomputed for its own weights:
reset, then one forward in train mode of ``BN_SAMPLES`` fixed latent vectors (their own seeded stream, drawn
afresh each time, so the result depends only on the weights: exact on resume). Measured against copying the
live statistics in docs/results.md ("The 100-epoch recipe").

Distributed runs need nothing extra: every rank updates its average from identical live weights.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch

from wgan.data.model_file import cpu_state
from wgan.models.networks import Generator
from wgan.models.sampling import balanced_digits, draw_latents
from wgan.training.batches import derive_seed

BN_SAMPLES = 2048  # latents for the recomputed statistics: one batch, so mean and variance are exact for it


class AveragedGenerator:
    """The moving average of ``generator``'s weights and its BatchNorm statistics, ready to sample from."""

    def __init__(self, generator: Generator, decay: float, seed: int, start: int = 0) -> None:
        self.decay = decay
        self.start = start  # the first iteration whose generator step moves the average; before it, a copy
        self.seed = derive_seed(seed, "ema-batchnorm")
        self.model = copy.deepcopy(generator).requires_grad_(False).eval()
        self._average = list(self.model.parameters())
        self._live = list(generator.parameters())
        self._stale = True  # the statistics do not belong to the current average yet

    @torch.no_grad()
    def update(self, iteration: int) -> None:
        """Move the average towards the live weights; called after the generator step of ``iteration``."""
        if iteration < self.start:
            torch._foreach_copy_(self._average, self._live)
        else:
            torch._foreach_lerp_(self._average, self._live, 1.0 - self.decay)
        self._stale = True

    def weight(self, iteration: int) -> float:
        """The lerp weight of ``update(iteration)``: 1 (a copy) before the start, else ``1 - decay``."""
        return 1.0 if iteration < self.start else 1.0 - self.decay

    @torch.no_grad()
    def lerp_(self, weight: torch.Tensor) -> None:
        """``update`` with the weight read from a tensor: what a CUDA graph records (``training.cuda_graphs``).

        ``lerp`` by 1 gives the live weights exactly (torch computes ``end - (end - start) * (1 - weight)`` for
        weights of 0.5 and more), so one recorded update does both the copy and the move. The weight goes in as a
        list (the ``List`` overload): a tensor where a number is expected would be read with ``.item()``, a host
        sync that a capture refuses, and its value at capture time would be frozen into the graph.
        """
        torch._foreach_lerp_(self._average, self._live, [weight] * len(self._average))

    def moved(self) -> None:
        """Say that the average moved outside ``update`` (a graph replay): its statistics are stale."""
        self._stale = True

    @torch.no_grad()
    def ready(self, autocast: Callable[[], Any]) -> Generator:
        """The averaged generator in eval mode, its BatchNorm statistics recomputed for its weights if stale."""
        if self._stale:
            recompute_batchnorm(self.model, self.seed, autocast)
            self._stale = False
        return self.model

    def state_dict(self) -> dict[str, torch.Tensor]:
        return cpu_state(self.model)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)
        self._stale = True


@torch.no_grad()
def recompute_batchnorm(model: Generator, seed: int, autocast: Callable[[], Any]) -> None:
    """Reset ``model``'s BatchNorm statistics and gather them anew from one batch of seeded latent vectors."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average: after one batch, exactly that batch's statistics
    device = next(model.parameters()).device
    z = draw_latents((BN_SAMPLES,), model.latent_dim, seed).to(device)
    n_classes = getattr(model, "n_classes", None)  # a conditional generator: every digit equally often
    labels = () if n_classes is None else (balanced_digits(BN_SAMPLES, n_classes).to(device),)
    model.train()
    try:
        with autocast():
            model(z, *labels)
    finally:
        model.eval()
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum


def make_average(generator: Generator, decay: float, seed: int, start: int = 0) -> AveragedGenerator | None:
    """The averaged generator of a run, or None when averaging is off (``ema_decay`` 0, the tutorial's way)."""
    return AveragedGenerator(generator, decay, seed, start) if decay > 0 else None
