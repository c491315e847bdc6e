"""Quality over training: each kept generator (``train.keep_every``) scored as the evaluate stage scores, and the best.

The pick is made where nothing is reported. Choosing the lowest of many noisy FIDs favours the generator whose
samples happened to suit the reference set (the winner's curse), so the pick must not see the evaluate stage's
test split nor its latents, or ``evaluate.generator: best`` would report a number biased low. Every point is
``score`` of ``quality.n_samples`` samples against a held-out slice of the training split (``REFERENCE_SIZE``
images, ``held_out``), from latents of the quality stage's own stream (``stream_seed``), beside ``fid_floor``: the
same FID for as many other training images. FID is biased upwards at small sample counts, so a point is read
against the floor at its own count; against another reference set, ``best_fid`` is not the evaluate stage's
``fid``. The best generator is the one with the lowest FID (the earliest on a tie).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import torch

from wgan.classifier.classifier import Classifier, Outputs, RealFeatures
from wgan.config import QualityConfig
from wgan.config.schema import MNIST_TEST_SIZE
from wgan.data.prepared import N_CLASSES, class_shares
from wgan.evaluation.evaluate import build_reference, check_sizes, classify_samples, score
from wgan.models.conditional import ConditionalGenerator
from wgan.models.networks import Generator

REFERENCE_SIZE = MNIST_TEST_SIZE  # as many as the test split evaluate compares with: the FIDs' scale alike


def stream_seed(purpose: str, seed: int) -> int:
    """A 63-bit seed of the quality stage's own for ``purpose`` ("latents", "reference") and ``quality.seed``.

    Hashed, so that no ``quality.seed`` gives the stream of an ``evaluate.seed`` (its seeds are below 2**32).
    """
    digest = hashlib.sha256(f"wgan.quality/{purpose}/{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def reference_size(n_train: int) -> int:
    """How many of ``n_train`` training images the reference slice holds: ``REFERENCE_SIZE``, at most half."""
    return min(REFERENCE_SIZE, n_train // 2)


def held_out(n_train: int, n_samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices into the training split: the reference slice and, disjoint from it, the floor's images.

    The first ``reference_size`` and the next ``n_samples`` (at most what is left) of one seeded permutation.
    """
    n_reference = reference_size(n_train)
    n_floor = min(n_samples, n_train - n_reference)
    order = torch.randperm(n_train, generator=torch.Generator().manual_seed(stream_seed("reference", seed)))
    return order[:n_reference], order[n_reference : n_reference + n_floor]


def held_out_features(real: RealFeatures, cfg: QualityConfig) -> RealFeatures:
    """The training split's features as the quality stage scores against them: the reference slice in the test
    split's place (``test``), the floor's images as ``train``. The test split is never read."""
    train, labels = real.train, real.train.labels
    assert labels is not None  # load_real_features checks them
    reference, floor = held_out(int(train.features.shape[0]), cfg.n_samples, cfg.seed)
    return RealFeatures(
        train=Outputs(train.features[floor], train.probs[floor], labels[floor]),
        test=Outputs(train.features[reference], train.probs[reference], labels[reference]),
        test_shares=class_shares(labels[reference], N_CLASSES),
    )


def score_over_training(
    generators: Iterable[tuple[int, Generator | ConditionalGenerator]],
    classifier: Classifier,
    real: RealFeatures,
    cfg: QualityConfig,
) -> list[dict[str, Any]]:
    """One record per (epoch, generator), in the order given: ``{"epoch", "fid", ..., "fid_floor"}``."""
    held = held_out_features(real, cfg)
    check_sizes(cfg, held, "quality", "held-out training slice")
    ref = build_reference(held, cfg)
    floor, _ = score(held.train, ref, cfg)
    latents = stream_seed("latents", cfg.seed)
    curve = []
    for epoch, generator in generators:
        values, _ = score(classify_samples(generator, classifier, cfg, seed=latents), ref, cfg)
        curve.append({"epoch": epoch, **values, "fid_floor": floor["fid"]})
    return curve


def best_point(curve: list[dict[str, Any]]) -> dict[str, Any]:
    """The record with the lowest FID; the earliest of equal ones."""
    return min(curve, key=lambda point: (point["fid"], point["epoch"]))
