"""What the training loop reads: the prepared splits (checked against each other and the params) and the run's
fixed inputs, each drawn from its own seeded stream so that logging and snapshots never move a training stream."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from wgan.config import TrainConfig
from wgan.data.prepared import N_CLASSES, Split, load_prepared
from wgan.errors import UserError
from wgan.models.conditional import digit_rows
from wgan.paths import TrainPaths, rerun
from wgan.training.batches import derive_seed
from wgan.training.distributed import World


@dataclass
class FixedInputs:
    """The run's fixed inputs, each from its own seeded stream: the snapshots' latents (and digits) and the
    held-out test batch with its latents (and, for a conditional critic, real and drawn digits)."""

    z: torch.Tensor
    labels: torch.Tensor | None
    held_real: torch.Tensor
    held_z: torch.Tensor
    held_labels: torch.Tensor | None  # the held-out batch's digits, for its real images and its fakes alike


def fixed_inputs(cfg: TrainConfig, test_split: Split, device: torch.device) -> FixedInputs:
    fixed = torch.Generator().manual_seed(derive_seed(cfg.seed, "fixed"))
    z = torch.randn(cfg.n_fixed, cfg.latent_dim, generator=fixed).to(device)
    labels = None
    if cfg.conditional:  # one row per digit, the same first n_fixed // 10 latents in every row
        per_digit = cfg.n_fixed // N_CLASSES
        z = z[:per_digit].repeat(N_CLASSES, 1)
        labels = digit_rows(per_digit).to(device)
    held = torch.Generator().manual_seed(derive_seed(cfg.seed, "heldout"))
    n_held = min(cfg.batch_size, len(test_split))
    held_index = torch.randperm(len(test_split), generator=held)[:n_held]
    held_real = test_split.images[held_index].to(device)
    held_z = torch.randn(n_held, cfg.latent_dim, generator=held).to(device)
    held_labels = test_split.labels[held_index].to(device) if cfg.conditional else None
    return FixedInputs(z, labels, held_real, held_z, held_labels)


def iterations_per_epoch(cfg: TrainConfig, n: int, world: World) -> int:
    """Batches per epoch; the checks that need the data's size or the number of processes."""
    if cfg.batch_size > n:
        raise UserError(f"train.batch_size = {cfg.batch_size} is larger than the training split ({n} images); lower it")
    if cfg.batch_size % world.world_size:
        raise UserError(f"train.batch_size = {cfg.batch_size} is not divisible by the {world.world_size} processes")
    return n // cfg.batch_size


def load_splits(paths: TrainPaths, norm: tuple[float, float] | None) -> tuple[Split, Split]:
    mean, std = norm if norm is not None else (None, None)
    train_split = load_prepared(paths.train_data, mean, std)
    test_split = load_prepared(paths.test_data, mean, std)
    if not (math.isclose(train_split.mean, test_split.mean) and math.isclose(train_split.std, test_split.std)):
        raise UserError(
            f"{paths.train_data} and {paths.test_data} were prepared with different normalizations; {rerun('prepare')}"
        )
    if len(test_split) == 0:
        raise UserError(f"{paths.test_data} holds no images; {rerun('prepare')}")
    return train_split, test_split
