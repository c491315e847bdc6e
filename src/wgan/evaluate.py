"""Score a generator against real MNIST, with the real-versus-real value beside every number.

Every sample set is compared with the test split in the classifier's feature space. The "floor"
is the same comparison for ``n_samples`` real training images (a seeded random subset): what a
generator that drew fresh real digits would score, so FID/KID are read against it rather than 0.

The memorization check is in feature space: the median distance from each generated sample to its
nearest training image (``nn_train_median``), beside the same for the test images
(``nn_train_median_floor``), which are real digits the models never saw. A generator that copies
its training images scores well below the floor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from wgan import metrics
from wgan.classifier import N_CLASSES, Classifier, Outputs, RealFeatures, run_classifier
from wgan.config import EvaluateConfig
from wgan.data import IMAGE_SHAPE
from wgan.errors import UserError
from wgan.models import Generator
from wgan.paths import rerun


@dataclass(frozen=True)
class Reference:
    """The classifier's view of the real data, computed once and shared by every sample set."""

    test: Outputs
    test_stats: tuple[torch.Tensor, torch.Tensor]  # mean and covariance of the test features (float64)
    test_radii: torch.Tensor  # k-NN radii of the test features, for precision/recall
    test_shares: torch.Tensor  # class frequencies of the test labels
    train: Outputs


def check_sizes(cfg: EvaluateConfig, n_train: int, n_test: int) -> None:
    """Reject settings the sets are too small for, with the key to change."""
    n_floor = min(cfg.n_samples, n_train)
    smallest = min(cfg.n_samples, n_test, n_floor)
    if cfg.kid_subset_size > smallest:
        raise UserError(
            f"evaluate.kid_subset_size = {cfg.kid_subset_size} is larger than the smallest set scored "
            f"({smallest}: n_samples {cfg.n_samples}, test split {n_test}, training subset {n_floor}); "
            f"lower it or raise evaluate.n_samples"
        )
    if cfg.pr_k >= smallest:
        raise UserError(
            f"evaluate.pr_k = {cfg.pr_k} needs more than {cfg.pr_k} images in every set scored (smallest: "
            f"{smallest}); lower it or raise evaluate.n_samples"
        )


def build_reference(real: RealFeatures, cfg: EvaluateConfig) -> Reference:
    """Precompute the test-side statistics every sample set is compared with."""
    return Reference(
        test=real.test,
        test_stats=metrics.feature_stats(real.test.features),
        test_radii=metrics.knn_radii(real.test.features, cfg.pr_k),
        test_shares=real.test_shares,
        train=real.train,
    )


@torch.no_grad()
def sample_generator(generator: Generator, n: int, seed: int, batch_size: int) -> torch.Tensor:
    """``n`` images from a fixed-seed latent draw; the result does not depend on ``batch_size`` (eval mode)."""
    generator.eval()
    z = torch.randn(n, generator.latent_dim, generator=torch.Generator().manual_seed(seed))
    return torch.cat([generator(batch) for batch in z.split(batch_size)])


def score(samples: Outputs, ref: Reference, cfg: EvaluateConfig) -> tuple[dict[str, float], torch.Tensor]:
    """The metrics of one sample set against the test split, and its predicted class shares."""
    kid_mean, kid_std = metrics.kid(
        samples.features, ref.test.features, cfg.kid_subsets, cfg.kid_subset_size, seed=cfg.seed
    )
    precision, recall = metrics.precision_recall(ref.test.features, samples.features, cfg.pr_k, ref.test_radii)
    cov = metrics.coverage(samples.probs, ref.test_shares)
    values = {
        "fid": metrics.frechet_distance(*metrics.feature_stats(samples.features), *ref.test_stats),
        "kid": kid_mean,
        "kid_std": kid_std,
        "precision": precision,
        "recall": recall,
        "classifier_score": metrics.classifier_score(samples.probs),
        "classes_covered": cov.classes_covered,
        "class_kl": cov.kl,
        "class_tv": cov.tv,
        "confident": cov.confident,
    }
    return values, cov.shares


def evaluate(
    generator: Generator, classifier: Classifier, real: RealFeatures, cfg: EvaluateConfig
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """All metrics of ``generator`` (flat, each with its ``_floor``), and the class histogram records.

    The histogram is ``[{"digit": d, "generated": share, "real": test share}, ...]`` for d = 0..9.
    """
    if tuple(generator.img_shape) != IMAGE_SHAPE:
        raise UserError(
            f"the generator makes {list(generator.img_shape)} images but the classifier needs {list(IMAGE_SHAPE)}; "
            f"{rerun('train')}"
        )
    n_train = int(real.train.features.shape[0])
    check_sizes(cfg, n_train, int(real.test.features.shape[0]))
    ref = build_reference(real, cfg)
    generated = run_classifier(
        classifier, sample_generator(generator, cfg.n_samples, cfg.seed, cfg.batch_size), cfg.batch_size
    )
    pick = torch.randperm(n_train, generator=torch.Generator().manual_seed(cfg.seed))[: cfg.n_samples]
    floor = Outputs(features=ref.train.features[pick], probs=ref.train.probs[pick])

    values, shares = score(generated, ref, cfg)
    floor_values, _ = score(floor, ref, cfg)
    values["nn_train_median"] = metrics.median_nn_distance(generated.features, ref.train.features)
    floor_values["nn_train_median"] = metrics.median_nn_distance(ref.test.features, ref.train.features)

    result: dict[str, Any] = {}
    for key, value in values.items():
        result[key] = value
        result[f"{key}_floor"] = floor_values[key]
    result["class_share"] = {str(d): float(s) for d, s in enumerate(shares)}
    hist = [{"digit": d, "generated": float(shares[d]), "real": float(ref.test_shares[d])} for d in range(N_CLASSES)]
    return result, hist
