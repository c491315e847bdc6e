"""The prepared dataset format: one file per split, loaded in one read.

Images are stored as uint8 (N x 1 x 28 x 28) with the affine map that normalizes them
(``x = (u8 / 255 - mean) / std``), not as float32: the file is 4x smaller (47 MB instead
of 188 MB for the training split), and the conversion on load takes a fraction of a second.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

from wgan.config import MNIST_CLASSES
from wgan.errors import UserError
from wgan.fileio import torch_load_safe, torch_save_atomic
from wgan.paths import rerun

FORMAT = "wgan-prepared-v1"
IMAGE_SHAPE = (1, 28, 28)
N_CLASSES = MNIST_CLASSES  # the labels' range
REBUILD_HINT = rerun("prepare")


@dataclass(frozen=True)
class Split:
    """A normalized split, ready for training: float32 images and int64 labels."""

    images: torch.Tensor
    labels: torch.Tensor
    mean: float
    std: float

    def __len__(self) -> int:
        return int(self.images.shape[0])


def class_shares(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Share of each class among ``labels`` (float64, sums to 1): the real test split's, or the classifier's picks."""
    counts = torch.bincount(labels.long(), minlength=n_classes).to(torch.float64)
    return counts / counts.sum()


def normalize(pixels_u8: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """uint8 pixels -> float32 ``(x / 255 - mean) / std``, as torchvision's ToTensor + Normalize."""
    return (pixels_u8.to(torch.float32) / 255.0 - mean) / std


def to_uint8(images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """Invert ``normalize`` (clamped and rounded): normalized floats -> uint8 pixels."""
    return ((images.float() * std + mean) * 255.0).round().clamp(0, 255).to(torch.uint8)


def save_prepared(
    path: str | os.PathLike[str], images_u8: torch.Tensor, labels: torch.Tensor, mean: float, std: float
) -> None:
    """Write a prepared split atomically."""
    if images_u8.dtype != torch.uint8 or tuple(images_u8.shape[1:]) != IMAGE_SHAPE:
        raise ValueError(f"images must be uint8 N x 1 x 28 x 28, got {images_u8.dtype} {tuple(images_u8.shape)}")
    if labels.shape != (images_u8.shape[0],):
        raise ValueError(f"labels must have shape ({images_u8.shape[0]},), got {tuple(labels.shape)}")
    payload = {
        "format": FORMAT,
        "images": images_u8.contiguous(),
        "labels": labels.to(torch.uint8).contiguous(),
        "mean": float(mean),
        "std": float(std),
    }
    torch_save_atomic(payload, path)


def load_prepared(
    path: str | os.PathLike[str], expect_mean: float | None = None, expect_std: float | None = None
) -> Split:
    """Load and check a prepared split; optionally insist on a given normalization."""
    raw = torch_load_safe(path, "prepared data", REBUILD_HINT)
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise UserError(f"{path} is not a prepared MNIST split ({FORMAT}); {REBUILD_HINT}")
    images, labels = raw.get("images"), raw.get("labels")
    mean, std = raw.get("mean"), raw.get("std")
    if (
        not isinstance(images, torch.Tensor)
        or images.dtype != torch.uint8
        or images.dim() != 4
        or tuple(images.shape[1:]) != IMAGE_SHAPE
        or not isinstance(labels, torch.Tensor)
        or labels.shape != (images.shape[0],)
        or not isinstance(mean, float)
        or not isinstance(std, float)
        or not (math.isfinite(mean) and math.isfinite(std) and std > 0)
        or (len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) <= 9)  # digits, or training crashes
    ):
        raise UserError(f"{path} is corrupt (unexpected shapes or types); {REBUILD_HINT}")
    for name, want, got in (("mean", expect_mean, mean), ("std", expect_std, std)):
        if want is not None and not math.isclose(want, got, rel_tol=1e-6, abs_tol=1e-9):
            raise UserError(f"{path} was prepared with {name}={got} but prepare.{name} is {want}; {REBUILD_HINT}")
    return Split(images=normalize(images, mean, std), labels=labels.to(torch.int64), mean=mean, std=std)
