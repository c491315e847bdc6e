"""Drawing from a trained generator: seeded latents, the digits to ask for, batched eval-mode sampling.

One seed gives the same latents (CPU, float32) whatever the device and the batch size, so the evaluate stage,
`wgan sample`, the latent walk and the averaged generator's BatchNorm statistics all draw the same way.

Truncation (Brock et al. 2019, "BigGAN", section 3.1): latents from the standard normal truncated at ``psi``, made
by redrawing every entry with ``|z| > psi`` from the same seeded generator until none is left. Redrawing (not
clipping) keeps the shape of the normal inside ``[-psi, psi]``; clipping would pile mass onto the bounds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from wgan.data.prepared import N_CLASSES
from wgan.models.conditional import ConditionalGenerator, label_args
from wgan.models.networks import Generator

BATCH_SIZE = 500  # generator forward batch; eval mode makes the images independent of it
# Below this, fewer than 0.8% of draws land inside [-psi, psi] and redrawing takes thousands of rounds.
MIN_TRUNCATION = 0.01


def check_truncation(psi: float | None) -> None:
    """A ``ValueError`` naming the bad value unless ``psi`` is None, inf or a number >= ``MIN_TRUNCATION``."""
    if psi is not None and not psi >= MIN_TRUNCATION:  # `not >=` also refuses NaN
        raise ValueError(f"truncation must be at least {MIN_TRUNCATION} (or inf for none), got {psi}")


def draw_latents(shape: tuple[int, ...], latent_dim: int, seed: int, truncation: float | None = None) -> torch.Tensor:
    """Standard-normal latent vectors ``[*shape, latent_dim]`` from their own seeded generator (CPU, float32).

    With ``truncation`` psi, every entry lies within ``[-psi, psi]``: the first draw is the untruncated one and
    entries outside are redrawn, in index order, until none is left. None or inf: exactly the untruncated draw.
    """
    check_truncation(truncation)
    rng = torch.Generator().manual_seed(seed)
    z = torch.randn(*shape, latent_dim, generator=rng)
    if truncation is None or math.isinf(truncation):
        return z
    flat = z.view(-1)
    outside = (flat.abs() > truncation).nonzero().squeeze(1)
    while outside.numel():  # each round touches only the entries still outside
        flat[outside] = torch.randn(outside.numel(), generator=rng)
        outside = outside[flat[outside].abs() > truncation]
    return z


def balanced_digits(n: int, n_classes: int = N_CLASSES) -> torch.Tensor:
    """``n`` labels cycling ``0, 1, ..., 9, 0, ...``: equal numbers of each digit when ``n`` is a multiple of 10."""
    return torch.arange(n) % n_classes


@torch.no_grad()
def sample(
    generator: Generator | ConditionalGenerator,
    z: torch.Tensor,
    labels: torch.Tensor | None = None,
    batch_size: int = BATCH_SIZE,
) -> torch.Tensor:
    """The images [N, C, H, W] of latents ``z`` [N, latent_dim] (and digits ``labels`` [N] for a conditional
    generator), normalized like the training data: in eval mode, batch by batch on the model's device, on CPU."""
    generator.eval()
    device = next(generator.parameters()).device
    z_batches = z.split(batch_size)
    label_batches = labels.split(batch_size) if labels is not None else [None] * len(z_batches)
    return torch.cat(
        [
            generator(zb.to(device), *label_args(None if yb is None else yb.to(device))).cpu()
            for zb, yb in zip(z_batches, label_batches, strict=True)
        ]
    )


def sample_digits(
    generator: ConditionalGenerator,
    digits: Sequence[int] | torch.Tensor,
    seed: int,
    batch_size: int = BATCH_SIZE,
    truncation: float | None = None,
) -> torch.Tensor:
    """One image of each requested digit, from the ``seed``'s latents (those an unconditional generator gets
    too, truncated at ``truncation``); an unknown digit is a ``ValueError``."""
    labels = torch.as_tensor(digits, dtype=torch.int64).reshape(-1)
    if labels.numel() and not bool(((labels >= 0) & (labels < generator.n_classes)).all()):
        raise ValueError(f"digits must be in 0..{generator.n_classes - 1}, got {sorted(set(labels.tolist()))}")
    z = draw_latents((labels.numel(),), generator.latent_dim, seed, truncation)
    return sample(generator, z, labels, batch_size)
