"""The judge: a second digit classifier whose features score the samples where nothing else looks.

The classifier stage's network picks the best kept generator (quality stage), scores every recipe and guided the
recipe searches: its feature space is a validation set. The judge is the test set. Only the evaluate stage reads
it, and it differs from the classifier in every way that shapes a feature space:

- the network: three 3x3 convolutions (two strided, in place of max-pooling), no normalization layer, SiLU, and
  a 64-wide feature layer, where the classifier has two 5x5 convolutions, BatchNorm, ReLU, max-pooling and a
  128-wide ReLU feature layer;
- the images: one seeded half of MNIST's training split (``judge.split_seed``, ``judge.half``), each batch shifted
  by up to ``judge.shift`` pixels, where the classifier learns from all of it, unshifted;
- its own seed, for the initial weights, the batch order and the shifts (three streams).

Its features of the other half of the training split (the images it never learned from) are the floors' real
images; docs/quality.md says why, and how far the two feature spaces are from copies of each other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from wgan.classifier.classifier import train_classifier
from wgan.config import JudgeConfig
from wgan.data.prepared import N_CLASSES, Split

SHIFT_STREAM = 2**32  # the shifts' generator is seeded with seed + this: never a params seed (<= 2**32 - 1)


class Judge(nn.Module):
    """conv3-SiLU, conv3/2-SiLU, conv3/2-SiLU, fc-SiLU (the feature layer, ``width`` wide), fc -> 10 logits.

    No normalization layer, so eval and train mode compute the same function. Global average pooling in place of
    the fully connected feature layer learned too slowly for a one-minute budget (docs/quality.md#the-judge).
    """

    KIND = "judge"  # the model file format: wgan.data.model_file.save_model / load_model
    STAGE = "judge"  # the stage that writes it

    def __init__(self, channels: Sequence[int] = (16, 32, 32), width: int = 64) -> None:
        super().__init__()
        self.channels = tuple(int(c) for c in channels)
        self.width = int(width)
        if len(self.channels) != 3:
            raise ValueError(f"channels must be three numbers, got {list(self.channels)}")
        c1, c2, c3 = self.channels
        self.body = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.SiLU(),  # 28 x 28
            nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.SiLU(),  # 14 x 14
            nn.Conv2d(c2, c3, 3, stride=2, padding=1), nn.SiLU(),  # 7 x 7
            nn.Flatten(), nn.Linear(c3 * 7 * 7, self.width), nn.SiLU(),
        )  # fmt: skip
        self.head = nn.Linear(self.width, N_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature-layer activations (``width`` wide; SiLU, so slightly negative ones too): the judge's space."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def init_kwargs(self) -> dict[str, Any]:
        return {"channels": list(self.channels), "width": self.width}


def halves(n: int, split_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint, seeded halves of ``range(n)`` (sorted indices; the first has the extra one of an odd ``n``)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    first = (n + 1) // 2
    return order[:first].sort().values, order[first:].sort().values


def split_for(train: Split, cfg: JudgeConfig) -> tuple[Split, Split]:
    """The half of the training split the judge learns from (``cfg.half``) and the half it never sees."""
    parts = halves(len(train), cfg.split_seed)
    learn, held_out = parts[cfg.half], parts[1 - cfg.half]
    return subset(train, learn), subset(train, held_out)


def subset(split: Split, index: torch.Tensor) -> Split:
    return dataclasses.replace(split, images=split.images[index], labels=split.labels[index])


class RandomShift:
    """Shifts each image by up to ``max_shift`` pixels each way (independently in x and y), the edges replicated.

    The draws come from a generator of its own, so they never move the weights' or the batch order's stream.
    MNIST's digits sit in a 20 x 20 box with 4 blank pixels around it, so a shift of 1-2 pixels never cuts one.
    """

    def __init__(self, max_shift: int, seed: int) -> None:
        self.max_shift = max_shift
        self.gen = torch.Generator().manual_seed(seed + SHIFT_STREAM)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        s = self.max_shift
        if s == 0:
            return x
        n, _, h, w = x.shape
        padded = F.pad(x, (s, s, s, s), mode="replicate")
        dy, dx = torch.randint(0, 2 * s + 1, (2, n), generator=self.gen)  # the top-left corner in the padded image
        rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # n x 1 x h x 1
        cols = (dx[:, None] + torch.arange(w))[:, None, None, :]  # n x 1 x 1 x w
        return padded[torch.arange(n)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None], rows, cols]


def train_judge(
    train: Split, cfg: JudgeConfig, log: Callable[[str], None] | None = None, **model_kwargs: Any
) -> tuple[Judge, Split]:
    """Train the judge on its half of ``train``; return it and the half it never saw (its floors' images).

    ``model_kwargs`` go to ``Judge`` (the tests use a tiny one).
    """
    learn, held_out = split_for(train, cfg)
    shift = RandomShift(cfg.shift, cfg.seed)
    model = train_classifier(learn.images, learn.labels, cfg, log, build=Judge, augment=shift, **model_kwargs)
    return model, held_out
