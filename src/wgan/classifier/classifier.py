"""A small LeNet-style digit classifier: trained once, then its penultimate layer scores the samples.

The metrics (FID, KID, precision/recall, ...) need a feature space in which MNIST digits are
well separated; the usual Inception network is slow on a CPU and was never trained on digits.
This one trains in a few epochs on a CPU and reaches 99% test accuracy (timings: docs/benchmarks.md).

Saved files hold ``{"kind": "classifier", "kwargs", "state_dict"}`` (tensors only), so they load
with ``torch.load(..., weights_only=True)``, like the generator and critic files.

The training loop, the outputs and the real-data features serve any network with ``features`` and ``head``: the
judge (``wgan.judge.judge``), a second feature space that only the evaluate stage reads, reuses them.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from wgan.config import ClassifierConfig
from wgan.data.prepared import N_CLASSES, Split, class_shares
from wgan.errors import UserError
from wgan.fileio import torch_load_safe, torch_save_atomic
from wgan.paths import rerun

LOAD_HINT = rerun("classifier")
M = TypeVar("M", bound=nn.Module)


class FeatureNet(Protocol):
    """What the metrics need of a network: its feature layer, and the head that maps features to 10 logits."""

    head: nn.Module

    def features(self, x: torch.Tensor) -> torch.Tensor: ...

    def eval(self) -> Any: ...


class Classifier(nn.Module):
    """conv5-BN-ReLU-pool, conv5-BN-ReLU-pool, fc-ReLU (the feature layer), fc -> 10 logits.

    BatchNorm buys about 0.2% of test accuracy in a 3-epoch budget; in eval mode it is a fixed
    affine map, so features do not depend on how the images are batched.
    """

    KIND = "classifier"  # the model file format: wgan.data.model_file.save_model / load_model
    STAGE = "classifier"  # the stage that writes it

    def __init__(self, channels: Sequence[int] = (16, 32), feature_dim: int = 128) -> None:
        super().__init__()
        self.channels = tuple(int(c) for c in channels)
        self.feature_dim = int(feature_dim)
        if len(self.channels) != 2:
            raise ValueError(f"channels must be two numbers, got {list(self.channels)}")
        c1, c2 = self.channels
        self.conv1 = nn.Conv2d(1, c1, 5, padding=2)  # 28 -> 28, pooled to 14
        self.bn1 = nn.BatchNorm2d(c1)
        self.conv2 = nn.Conv2d(c1, c2, 5)  # 14 -> 10, pooled to 5
        self.bn2 = nn.BatchNorm2d(c2)
        self.fc = nn.Linear(c2 * 5 * 5, self.feature_dim)
        self.head = nn.Linear(self.feature_dim, N_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer activations (non-negative, ``feature_dim`` wide): the metrics' feature space."""
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        return F.relu(self.fc(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def init_kwargs(self) -> dict[str, Any]:
        return {"channels": list(self.channels), "feature_dim": self.feature_dim}


@dataclass(frozen=True)
class Outputs:
    """What the metrics need from the classifier for a set of images."""

    features: torch.Tensor  # N x feature_dim, float32
    probs: torch.Tensor  # N x 10, float32 softmax
    labels: torch.Tensor | None = None  # N, int64: the true digits of real images, the asked ones of generated ones


def train_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: ClassifierConfig,
    log: Callable[[str], None] | None = None,
    build: Callable[..., M] = Classifier,  # type: ignore[assignment]
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    **model_kwargs: Any,
) -> M:
    """Train with Adam on in-memory tensors (``torch.randperm`` batches); deterministic for a given seed on CPU.

    The learning rate decays on a cosine schedule to zero over all steps, which is worth a few
    tenths of a percent of test accuracy over a constant rate at no extra cost.
    ``build(**model_kwargs)`` makes the network (default ``Classifier``; the tests use a tiny one, the judge its
    own); ``augment`` maps each batch of images before the step (the judge's random shifts; none here).
    """
    torch.manual_seed(cfg.seed)  # the initial weights
    model = build(**model_kwargs)
    order = torch.Generator().manual_seed(cfg.seed)  # the batch order, independent of the global RNG
    n = int(images.shape[0])
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps_per_epoch)
    model.train()
    for epoch in range(1, cfg.epochs + 1):
        start, total = time.perf_counter(), 0.0
        for idx in torch.randperm(n, generator=order).split(cfg.batch_size):
            batch = images[idx] if augment is None else augment(images[idx])
            loss = F.cross_entropy(model(batch), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        if log is not None:
            log(f"epoch {epoch}/{cfg.epochs}: train loss {total / n:.4f} ({time.perf_counter() - start:.1f} s)")
    return model.eval()


@torch.no_grad()
def run_classifier(
    model: FeatureNet, images: torch.Tensor, batch_size: int = 1000, labels: torch.Tensor | None = None
) -> Outputs:
    """Features and class probabilities of ``images``, in eval mode and in batches to bound memory; ``labels``
    (the true digits of real images, the asked ones of generated ones) are carried beside them."""
    model.eval()
    feats, probs = [], []
    for batch in images.split(batch_size):
        f = model.features(batch)
        feats.append(f)
        probs.append(torch.softmax(model.head(f), dim=1))
    return Outputs(features=torch.cat(feats), probs=torch.cat(probs), labels=labels)


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> dict[str, float]:
    """``{"accuracy", "test_loss"}`` of ``model`` on a labelled set (mean cross-entropy as the loss)."""
    model.eval()
    correct, loss = 0, 0.0
    for x, y in zip(images.split(batch_size), labels.split(batch_size), strict=True):
        logits = model(x)
        correct += int((logits.argmax(1) == y).sum())
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
    n = int(labels.shape[0])
    return {"accuracy": correct / n, "test_loss": loss / n}


REAL_FEATURES_FORMAT = "wgan-real-features-v2"  # v2: with the labels of both splits


@dataclass(frozen=True)
class RealFeatures:
    """The classifier's outputs on both real splits, written once by the classifier stage.

    Every evaluation (one per experiment) reuses them instead of running the classifier over 70,000
    real images again: they depend only on the classifier and the data, never on the generator.
    """

    train: Outputs
    test: Outputs
    test_shares: torch.Tensor  # class frequencies of the test labels


def real_features(classifier: FeatureNet, train: Split, test: Split, batch_size: int = 1000) -> RealFeatures:
    """Run the classifier (or the judge) over both real splits (their labels kept beside the outputs)."""
    return RealFeatures(
        train=run_classifier(classifier, train.images, batch_size, train.labels),
        test=run_classifier(classifier, test.images, batch_size, test.labels),
        test_shares=class_shares(test.labels, N_CLASSES),
    )


def save_real_features(real: RealFeatures, path: str | os.PathLike[str]) -> None:
    """Write the real-data features atomically (tensors only: weights_only-loadable)."""
    payload = {"format": REAL_FEATURES_FORMAT, "test_shares": real.test_shares}
    for split in ("train", "test"):
        out = getattr(real, split)
        assert out.labels is not None  # real_features keeps them
        payload[split] = {
            "features": out.features.contiguous(),
            "probs": out.probs.contiguous(),
            "labels": out.labels.to(torch.int64).contiguous(),
        }
    torch_save_atomic(payload, path)


def load_real_features(path: str | os.PathLike[str], hint: str = LOAD_HINT) -> RealFeatures:
    """Load and check the classifier stage's real-data features (or the judge's, with its ``hint``)."""
    raw = torch_load_safe(path, "real-data features", hint)
    try:
        if not isinstance(raw, dict) or raw.get("format") != REAL_FEATURES_FORMAT:
            raise ValueError("format")
        splits = [Outputs(raw[s]["features"], raw[s]["probs"], raw[s]["labels"]) for s in ("train", "test")]
        shares = raw["test_shares"]
        for out in splits:
            n = out.features.shape[0]
            ok = out.features.dim() == 2 and out.probs.shape == (n, N_CLASSES) and out.labels.shape == (n,)
            if not ok or splits[0].features.shape[1] != out.features.shape[1]:
                raise ValueError("shapes")
        if shares.shape != (N_CLASSES,):
            raise ValueError("shares")
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as exc:
        raise UserError(f"{path} is not a real-features file ({REAL_FEATURES_FORMAT}); {hint}") from exc
    return RealFeatures(train=splits[0], test=splits[1], test_shares=shares)
