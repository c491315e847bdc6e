"""Drawing from a trained generator: seeded latents, the digits to ask for, batched eval-mode sampling, truncation.

One seed gives the same latents (CPU, float32) whatever the device and the batch size, so the evaluate stage,
`wgan sample`, the latent walk and the averaged generator's BatchNorm statistics all draw the same way.

Truncation (``truncation=PSI``, ``wgan sample --truncation PSI``) is "density truncation": it trades variety for
fidelity inside the region the generator was trained on. The latents stay standard normal; at one hidden block
each sample's activation ``h`` is pulled towards its nearest centre ``c`` of the generator's own activations, to at
most the radius ``r(PSI)``: ``h' = c + (h - c) * min(1, r / |h - c|)``. The centres are k-means centres of the
activations of a fit set of latents, and ``r(PSI)`` is the PSI-quantile of the fit set's distances to them: at
PSI 0.3, 30% of the fit samples lie within it and do not move; the rest (the generator's low-density outliers) are
pulled in. PSI 1 is off. BigGAN's per-entry truncation of the latent, which this replaced, shrinks every latent
towards a centre the generator never saw in training: at any PSI a user would try it lost more FID and recall
than it gained in precision and collapsed the lost variety onto 8s and 9s (docs/benchmarks.md, "Truncation").
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from wgan.data.prepared import N_CLASSES
from wgan.models.conditional import ConditionalGenerator, label_args
from wgan.models.networks import Generator

BATCH_SIZE = 500  # generator forward batch; eval mode makes the images independent of it
# The density truncation's fit (measured on today's recipe, docs/benchmarks.md "Truncation"): 512 centres placed
# the radius better than 1024 (and than 32 or 256 at the first block); 20 fixed iterations of k-means, not "until
# converged", so the centres are a function of the generator alone. 20,000 fit latents: 39 per centre.
FIT_SIZE = 20_000
FIT_SEED = 12345  # the fit latents' own stream: not evaluate's (evaluate.seed) nor the quality stage's
N_CENTRES = 512
KMEANS_ITERATIONS = 20
KMEANS_SEED = 0  # the seeded permutation that picks the starting centres among the fit activations


def check_truncation(psi: float | None) -> None:
    """A ``ValueError`` naming the bad value unless ``psi`` is None (no truncation) or in (0, 1] (1: none)."""
    if psi is not None and not 0 < psi <= 1:  # `not` also refuses NaN
        raise ValueError(f"truncation psi must be in (0, 1] (1: none; smaller: truer digits, less variety), got {psi}")


def draw_latents(shape: tuple[int, ...], latent_dim: int, seed: int) -> torch.Tensor:
    """Standard-normal latent vectors ``[*shape, latent_dim]`` from their own seeded generator (CPU, float32)."""
    return torch.randn(*shape, latent_dim, generator=torch.Generator().manual_seed(seed))


def balanced_digits(n: int, n_classes: int = N_CLASSES) -> torch.Tensor:
    """``n`` labels cycling ``0, 1, ..., 9, 0, ...``: equal numbers of each digit when ``n`` is a multiple of 10."""
    return torch.arange(n) % n_classes


def truncation_layer(generator: Generator | ConditionalGenerator) -> nn.LeakyReLU:
    """The activation whose output the truncation moves: the second-to-last hidden block's (the third of the
    default four; the only one of a one-block MLP). Measured on today's recipe: at the first block a radius acts
    like a latent truncation (it moves what the latent chooses) and costs more FID per precision; at the last one
    the output layer cannot repair a moved point (FID 3.17 for precision +0.04, against 3.07 for +0.05 here)."""
    mlp = generator.net.model if isinstance(generator, ConditionalGenerator) else generator.model
    blocks = [m for m in mlp if isinstance(m, nn.LeakyReLU)]
    return blocks[max(len(blocks) - 2, 0)]


@dataclass(frozen=True)
class DensityTruncation:
    """The truncation fitted to one generator: centres of its activations and the fit set's sorted distances."""

    centres: torch.Tensor  # [k, width], on the CPU
    distances: torch.Tensor  # [fit size], ascending: each fit activation's distance to its nearest centre

    @classmethod
    def fit(
        cls,
        generator: Generator | ConditionalGenerator,
        fit_size: int = FIT_SIZE,  # latents drawn from FIT_SEED (balanced digits for a conditional generator)
        n_centres: int = N_CENTRES,  # at most fit_size
        iterations: int = KMEANS_ITERATIONS,
        batch_size: int = BATCH_SIZE,
    ) -> DensityTruncation:
        """Deterministic on the CPU: fixed latents, starting centres and iteration count."""
        z = draw_latents((fit_size,), generator.latent_dim, FIT_SEED)
        labels = balanced_digits(fit_size, generator.n_classes) if isinstance(generator, ConditionalGenerator) else None
        seen: list[torch.Tensor] = []
        handle = truncation_layer(generator).register_forward_hook(lambda m, i, out: seen.append(out.cpu().clone()))
        try:
            sample(generator, z, labels, batch_size)
        finally:
            handle.remove()
        h = torch.cat(seen)
        centres = kmeans(h, min(n_centres, fit_size), iterations)
        distances = (h - centres[nearest(h, centres)]).norm(dim=1)
        return cls(centres, distances.sort().values)

    def radius(self, psi: float) -> float:
        """The PSI-quantile of the fit set's distances: the share PSI of fit samples lies within it."""
        return float(torch.quantile(self.distances, psi))

    @contextmanager
    def applied(self, generator: Generator | ConditionalGenerator, psi: float) -> Iterator[None]:
        """Within the block, ``generator``'s activations are clamped to ``radius(psi)`` around their nearest centre;
        the hook is removed on the way out, whatever happens."""
        r = self.radius(psi)
        layer = truncation_layer(generator)
        centres = self.centres.to(next(generator.parameters()).device)

        def clamp(module: nn.Module, inputs: tuple[torch.Tensor, ...], h: torch.Tensor) -> torch.Tensor:
            c = centres[nearest(h, centres)]
            dist = (h - c).norm(dim=1, keepdim=True)
            return torch.where(dist > r, c + (h - c) * (r / dist), h)  # those inside stay bit for bit

        handle = layer.register_forward_hook(clamp)
        try:
            yield
        finally:
            handle.remove()


def nearest(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """The index of each row of ``x`` [N, D]'s nearest centre [k, D] (Euclidean)."""
    return torch.cdist(x, centres).argmin(dim=1)


def kmeans(x: torch.Tensor, k: int, iterations: int) -> torch.Tensor:
    """Lloyd's k-means of the rows of ``x`` [N, D]: ``k`` centres [k, D], started at rows picked by a permutation
    seeded with ``KMEANS_SEED``; a centre that loses all its points stays where it was. (Hand-written: torch has
    none, and the project depends on no clustering library for these twelve lines.)"""
    centres = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(KMEANS_SEED))[:k]].clone()
    for _ in range(iterations):
        assigned = nearest(x, centres)
        sums = torch.zeros_like(centres).index_add_(0, assigned, x)
        counts = torch.bincount(assigned, minlength=k)
        kept = counts > 0
        centres[kept] = sums[kept] / counts[kept, None].to(x.dtype)
    return centres


@torch.no_grad()
def sample(
    generator: Generator | ConditionalGenerator,
    z: torch.Tensor,
    labels: torch.Tensor | None = None,
    batch_size: int = BATCH_SIZE,
    truncation: float | None = None,
    density: DensityTruncation | None = None,
) -> torch.Tensor:
    """The images [N, C, H, W] of latents ``z`` [N, latent_dim] (and digits ``labels`` [N] for a conditional
    generator), normalized like the training data: in eval mode, batch by batch on the model's device, on CPU.

    ``truncation`` PSI in (0, 1] clamps them with ``density`` (None: fitted here, ``DensityTruncation.fit``; pass
    one to reuse it); None or 1: the untruncated images, bit for bit."""
    check_truncation(truncation)
    generator.eval()
    if truncation is None or truncation == 1:
        return _forward(generator, z, labels, batch_size)
    density = DensityTruncation.fit(generator, batch_size=batch_size) if density is None else density
    with density.applied(generator, truncation):
        return _forward(generator, z, labels, batch_size)


def _forward(
    generator: Generator | ConditionalGenerator, z: torch.Tensor, labels: torch.Tensor | None, batch_size: int
) -> torch.Tensor:
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
    too), truncated at ``truncation`` (``sample``); an unknown digit is a ``ValueError``."""
    labels = torch.as_tensor(digits, dtype=torch.int64).reshape(-1)
    if labels.numel() and not bool(((labels >= 0) & (labels < generator.n_classes)).all()):
        raise ValueError(f"digits must be in 0..{generator.n_classes - 1}, got {sorted(set(labels.tolist()))}")
    z = draw_latents((labels.numel(),), generator.latent_dim, seed)
    return sample(generator, z, labels, batch_size, truncation)
