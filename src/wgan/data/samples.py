"""The fixed-noise samples: one type and one file format (``models/samples.pt``), written by train, read by render.

Every ``train.sample_interval`` iterations the generator draws the same ``train.n_fixed`` latent vectors; each
snapshot is stored as uint8 pixels (a fixed range, so frames of the GIF compare without per-frame
normalization) with the 0-based epoch and the iteration it was taken at. A conditional run's file also holds
the digit asked for each image (``labels``, the same in every snapshot: one block of rows per digit).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch

from wgan.errors import UserError
from wgan.fileio import torch_load_safe, torch_save_atomic
from wgan.paths import rerun

SAMPLES_FORMAT = "wgan-samples-v1"


@dataclass
class Samples:
    """Snapshots in training order: uint8 images [n_fixed, 1, H, W] each, with their epoch and iteration."""

    images: list[torch.Tensor] = field(default_factory=list)
    epoch: list[int] = field(default_factory=list)
    iteration: list[int] = field(default_factory=list)
    labels: torch.Tensor | None = None  # int64 [n_fixed]: the digit of each image (conditional runs only)

    def __len__(self) -> int:
        return len(self.images)

    def append(self, images: torch.Tensor, epoch: int, iteration: int) -> None:
        self.images.append(images)
        self.epoch.append(epoch)
        self.iteration.append(iteration)

    def to_payload(self) -> dict[str, Any]:
        """The file content (also stored in checkpoints): tensors only, so ``weights_only`` loading works."""
        payload = {
            "format": SAMPLES_FORMAT,
            "images": torch.stack(self.images),
            "epoch": torch.tensor(self.epoch, dtype=torch.int64),
            "iteration": torch.tensor(self.iteration, dtype=torch.int64),
        }
        if self.labels is not None:
            payload["labels"] = self.labels
        return payload

    @classmethod
    def from_payload(cls, raw: Any, source: str | os.PathLike[str]) -> Samples:
        """Check and unpack ``to_payload``'s content; anything else is a ``UserError`` naming ``source``."""
        hint = rerun("train")
        if not isinstance(raw, dict) or raw.get("format") != SAMPLES_FORMAT:
            raise UserError(f"{source} is not a fixed-noise samples file ({SAMPLES_FORMAT}); {hint}")
        images, epoch, iteration = raw.get("images"), raw.get("epoch"), raw.get("iteration")
        if not (
            isinstance(images, torch.Tensor)
            and images.dtype == torch.uint8
            and images.dim() == 5
            and images.shape[2] == 1
            and isinstance(epoch, torch.Tensor)
            and isinstance(iteration, torch.Tensor)
            and epoch.dtype == iteration.dtype == torch.int64
            and epoch.shape == iteration.shape == (images.shape[0],)
            and bool((epoch >= 0).all())
            and bool((iteration >= 0).all())
        ):
            raise UserError(
                f"{source} is corrupt: expected uint8 images [S, N, 1, H, W] with int64 epoch and iteration >= 0 "
                f"[S]; {hint}"
            )
        if 0 in (images.shape[0], images.shape[1], images.shape[3], images.shape[4]):
            raise UserError(
                f"{source} holds no samples (shape {list(images.shape)}); train for at least train.sample_interval "
                f"iterations and {hint}"
            )
        labels = raw.get("labels")
        if labels is not None and not (
            isinstance(labels, torch.Tensor) and labels.dtype == torch.int64 and labels.shape == (images.shape[1],)
        ):
            raise UserError(f"{source} is corrupt: expected int64 labels [N], one per fixed sample; {hint}")
        return cls(list(images.unbind(0)), epoch.tolist(), iteration.tolist(), labels)


def save_samples(samples: Samples, path: str | os.PathLike[str]) -> None:
    torch_save_atomic(samples.to_payload(), path)


def load_samples(path: str | os.PathLike[str]) -> Samples:
    return Samples.from_payload(torch_load_safe(path, "samples", rerun("train")), path)
