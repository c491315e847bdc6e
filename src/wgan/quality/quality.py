"""Quality over training: each kept generator (``train.keep_every``) scored as the evaluate stage scores, and the best.

Every point is ``score`` of ``quality.n_samples`` samples against the test split (FID, KID, precision, recall,
confident, class TV, ...), beside ``fid_floor``, the same FID for as many real training images: FID is biased
upwards at small sample counts, so a point is read against the floor at its own count, not against the evaluate
stage's 10,000-sample numbers. The best generator is the one with the lowest FID (the earliest on a tie).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from wgan.classifier.classifier import Classifier, RealFeatures
from wgan.config import QualityConfig
from wgan.evaluation.evaluate import build_reference, check_sizes, classify_samples, real_subset, score
from wgan.models.conditional import ConditionalGenerator
from wgan.models.networks import Generator


def score_over_training(
    generators: Iterable[tuple[int, Generator | ConditionalGenerator]],
    classifier: Classifier,
    real: RealFeatures,
    cfg: QualityConfig,
) -> list[dict[str, Any]]:
    """One record per (epoch, generator), in the order given: ``{"epoch", "fid", ..., "fid_floor"}``."""
    check_sizes(cfg, real, "quality")
    ref = build_reference(real, cfg)
    floor, _ = score(real_subset(ref, cfg), ref, cfg)
    curve = []
    for epoch, generator in generators:
        values, _ = score(classify_samples(generator, classifier, cfg), ref, cfg)
        curve.append({"epoch": epoch, **values, "fid_floor": floor["fid"]})
    return curve


def best_point(curve: list[dict[str, Any]]) -> dict[str, Any]:
    """The record with the lowest FID; the earliest of equal ones."""
    return min(curve, key=lambda point: (point["fid"], point["epoch"]))
