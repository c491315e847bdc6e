"""Seeded random streams and batching: the whole training split on the device, one permutation an epoch.

There are no per-sample transforms and no DataLoader: each epoch is one ``torch.randperm`` on the
training device and batches are gathered by index. The last incomplete batch is dropped, so an epoch
is ``len(train) // batch_size`` iterations (937 for MNIST at 64; the tutorial keeps a partial 938th):
every step sees the same batch size (comparable losses, static shapes for CUDA graphs) and every
image still takes part, since each epoch draws a new order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import torch

from wgan.data.prepared import N_CLASSES


def derive_seed(seed: int, stream: str) -> int:
    """Independent 63-bit seeds for the named random streams of one run (no overlap between streams)."""
    digest = hashlib.sha256(f"{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def rank_share(batch: torch.Tensor, rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """This rank's strided share of a whole batch (its rows ``rank, rank + world_size, ...``)."""
    return batch[rank::world_size]


def batch_indices(perm: torch.Tensor, i: int, batch_size: int, rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """Indices of batch ``i`` of an epoch's permutation; under several processes each rank takes its strided share."""
    return rank_share(perm[i * batch_size : (i + 1) * batch_size], rank, world_size)


def epoch_batches(
    images: torch.Tensor,
    batch_size: int,
    shuffle: torch.Generator,
    rank: int = 0,
    world_size: int = 1,
    start: int = 0,
    labels: torch.Tensor | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """One epoch of full batches gathered from on-device ``images`` in a fresh random order (last partial dropped).

    Yields ``(images, labels)`` per batch, the labels gathered with the same indices (None when not given).
    ``start`` skips the first batches (a run resumed mid-epoch, ``shuffle`` set to the epoch's start state).
    """
    perm = torch.randperm(images.shape[0], generator=shuffle, device=images.device)
    for i in range(start, images.shape[0] // batch_size):
        idx = batch_indices(perm, i, batch_size, rank, world_size)
        yield images[idx], None if labels is None else labels[idx]


def draw_fake_labels(
    noise: torch.Generator, n: int, n_classes: int = N_CLASSES, rank: int = 0, world_size: int = 1
) -> torch.Tensor:
    """``n`` uniform digits for this rank: drawn for the whole batch (``n * world_size``) on the stream's device.

    Every rank draws the same whole batch from its copy of the stream and keeps its ``rank_share``, so the
    stream stays in step across ranks and the labels do not depend on the number of processes.
    """
    labels = torch.randint(n_classes, (n * world_size,), device=noise.device, generator=noise)
    return rank_share(labels, rank, world_size)
