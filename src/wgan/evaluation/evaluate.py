"""Score a generator against real MNIST, with the real-versus-real value beside every number.

Every sample set is compared with the test split in the classifier's feature space. The "floor"
is the same comparison for ``n_samples`` real training images (a seeded random subset): what a
generator that drew fresh real digits would score, so FID/KID are read against it rather than 0.

The memorization check is in feature space: the median distance from each generated sample to its
nearest training image (``nn_train_median``), beside the same for the test images
(``nn_train_median_floor``), which are real digits the models never saw. A generator that copies
its training images scores well below the floor.

A conditional generator (``wgan.models.conditional``) is asked for equal numbers of each digit, and is also scored
digit by digit: ``label_accuracy``, the share of samples the classifier assigns to the digit asked for (floor:
the classifier's own test accuracy), and the FID of each digit's samples to that digit's test images
(``digit_fid``; its mean and its worst digit, by name), the floor of each being the training subset's digit.

Given the judge (``wgan.judge``: a second network that nothing in training, best-epoch picking or recipe search
reads), the same samples are scored in its feature space too: ``judge_fid``, ``judge_kid``, ``judge_precision`` and
``judge_recall``, each with its floor, whose real images come from the half of the training split the judge never
learned from. The classifier-space numbers do not depend on whether the judge is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from wgan.classifier.classifier import N_CLASSES, Classifier, FeatureNet, Outputs, RealFeatures, run_classifier
from wgan.config import ScoringConfig
from wgan.data.prepared import IMAGE_SHAPE
from wgan.errors import UserError
from wgan.evaluation import metrics
from wgan.models.conditional import ConditionalGenerator
from wgan.models.networks import Generator
from wgan.models.sampling import balanced_digits, draw_latents, sample, sample_digits
from wgan.paths import rerun

JUDGE_METRICS = ("fid", "kid", "kid_std", "precision", "recall")  # of ``score``'s, those reported in the judge's space
JUDGE_PREFIX = "judge_"


@dataclass(frozen=True)
class Reference:
    """The classifier's view of the real data, computed once and shared by every sample set."""

    test: Outputs
    test_stats: tuple[torch.Tensor, torch.Tensor]  # mean and covariance of the test features (float64)
    test_radii: torch.Tensor  # k-NN radii of the test features, for precision/recall
    test_shares: torch.Tensor  # class frequencies of the test labels
    train: Outputs


def check_sizes(
    cfg: ScoringConfig, real: RealFeatures, section: str = "evaluate", reference: str = "test split"
) -> None:
    """Reject settings the sets are too small for, with the key (of params section ``section``) to change;
    ``reference`` names the set ``real.test`` holds in the message."""
    n_train, n_test = int(real.train.features.shape[0]), int(real.test.features.shape[0])
    n_floor = min(cfg.n_samples, n_train)
    smallest = min(cfg.n_samples, n_test, n_floor)
    if cfg.kid_subset_size > smallest:
        raise UserError(
            f"{section}.kid_subset_size = {cfg.kid_subset_size} is larger than the smallest set scored "
            f"({smallest}: n_samples {cfg.n_samples}, {reference} {n_test}, training subset {n_floor}); "
            f"lower it or raise {section}.n_samples"
        )
    if cfg.pr_k >= smallest:
        raise UserError(
            f"{section}.pr_k = {cfg.pr_k} needs more than {cfg.pr_k} images in every set scored (smallest: "
            f"{smallest}); lower it or raise {section}.n_samples"
        )


def build_reference(real: RealFeatures, cfg: ScoringConfig) -> Reference:
    """Precompute the test-side statistics every sample set is compared with."""
    return Reference(
        test=real.test,
        test_stats=metrics.feature_stats(real.test.features),
        test_radii=metrics.knn_radii(real.test.features, cfg.pr_k),
        test_shares=real.test_shares,
        train=real.train,
    )


def score(samples: Outputs, ref: Reference, cfg: ScoringConfig) -> tuple[dict[str, float], torch.Tensor]:
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
    generator: Generator | ConditionalGenerator,
    classifier: Classifier,
    real: RealFeatures,
    cfg: ScoringConfig,
    truncation: float | None = None,
    judge: tuple[FeatureNet, RealFeatures] | None = None,
) -> tuple[dict[str, Any], list[dict[str, float]], list[dict[str, float]]]:
    """All metrics of ``generator`` (flat, each with its ``_floor``), the class histogram and digit accuracy records.

    ``truncation``: the samples are drawn truncated at it (``wgan.models.sampling.sample``); the stage never
    truncates, benchmarks/truncation.py does. ``judge``: the judge and its real-data features; the same
    samples are then scored in its space too (``judge_fid``, ...), after every key of the classifier's.

    The histogram is ``[{"digit": d, "generated": share, "real": test share}, ...]`` for d = 0..9; the digit
    accuracy ``[{"digit": d, "generated": accuracy, "real": the classifier's test accuracy}, ...]``, empty for
    an unconditional generator.
    """
    check_sizes(cfg, real)
    if judge is not None:
        check_sizes(cfg, judge[1])
    if isinstance(generator, ConditionalGenerator) and cfg.n_samples < 2 * N_CLASSES:
        raise UserError(
            f"evaluate.n_samples = {cfg.n_samples} is too small for a conditional generator: the FID of each digit "
            f"needs at least 2 samples of it; raise it to at least {2 * N_CLASSES}"
        )
    images, asked = draw_samples(generator, cfg, truncation)
    return evaluate_images(images, asked, classifier, real, cfg, judge)


def evaluate_images(
    images: torch.Tensor,
    asked: torch.Tensor | None,
    classifier: Classifier,
    real: RealFeatures,
    cfg: ScoringConfig,
    judge: tuple[FeatureNet, RealFeatures] | None = None,
) -> tuple[dict[str, Any], list[dict[str, float]], list[dict[str, float]]]:
    """``evaluate``'s scores of ``cfg.n_samples`` generated ``images`` (with the digits ``asked`` for, for a
    conditional generator; None otherwise), however they were drawn: benchmarks/selection_dials.py scores samples
    picked from a larger pool with it."""
    ref = build_reference(real, cfg)
    generated = run_classifier(classifier, images, cfg.batch_size, asked)
    floor = real_subset(ref, cfg)

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
    accuracy: list[dict[str, float]] = []
    if asked is not None:
        digit_values, accuracy = score_digits(generated, floor, ref.test)
        result.update(digit_values)
    if judge is not None:
        result.update(judge_scores(images, *judge, cfg))
    return result, hist, accuracy


def judge_scores(images: torch.Tensor, judge: FeatureNet, real: RealFeatures, cfg: ScoringConfig) -> dict[str, float]:
    """``JUDGE_METRICS`` of ``images`` in the judge's feature space, each as ``judge_<key>`` beside its ``_floor``.

    ``real.train`` holds the training images the judge never learned from: the floor's subset is drawn from them
    (``real_subset``, seeded like the classifier's), so that every set it scores is unseen by it, as samples are.
    """
    ref = build_reference(real, cfg)
    values, _ = score(run_classifier(judge, images, cfg.batch_size), ref, cfg)
    floor, _ = score(real_subset(ref, cfg), ref, cfg)
    result = {}
    for key in JUDGE_METRICS:
        result[f"{JUDGE_PREFIX}{key}"] = values[key]
        result[f"{JUDGE_PREFIX}{key}_floor"] = floor[key]
    return result


def classify_samples(
    generator: Generator | ConditionalGenerator,
    classifier: Classifier,
    cfg: ScoringConfig,
    truncation: float | None = None,
    seed: int | None = None,
) -> Outputs:
    """The classifier's outputs for the samples of ``draw_samples`` (latents of ``seed``; None: ``cfg.seed``; the
    quality stage passes a stream of its own), which carry the digits asked for (if any)."""
    images, asked = draw_samples(generator, cfg, truncation, seed)
    return run_classifier(classifier, images, cfg.batch_size, asked)


def draw_samples(
    generator: Generator | ConditionalGenerator,
    cfg: ScoringConfig,
    truncation: float | None = None,
    seed: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``cfg.n_samples`` images of ``generator`` from the latents of ``seed`` (None: ``cfg.seed``) truncated at
    ``truncation`` (``sample``), and the digits asked for: a conditional generator is asked for equal numbers
    of each digit."""
    if tuple(generator.img_shape) != IMAGE_SHAPE:
        raise UserError(
            f"the generator makes {list(generator.img_shape)} images but the classifier needs {list(IMAGE_SHAPE)}; "
            f"{rerun('train')}"
        )
    seed = cfg.seed if seed is None else seed
    if isinstance(generator, ConditionalGenerator):
        asked = balanced_digits(cfg.n_samples)
        images = sample_digits(generator, asked, seed, cfg.batch_size, truncation)
    else:
        z = draw_latents((cfg.n_samples,), generator.latent_dim, seed)
        asked, images = None, sample(generator, z, batch_size=cfg.batch_size, truncation=truncation)
    return images, asked


def real_subset(ref: Reference, cfg: ScoringConfig) -> Outputs:
    """``cfg.n_samples`` real training images (a subset seeded by ``cfg.seed``): what the floors score."""
    n_train = int(ref.train.features.shape[0])
    pick = torch.randperm(n_train, generator=torch.Generator().manual_seed(cfg.seed))[: cfg.n_samples]
    return Outputs(ref.train.features[pick], ref.train.probs[pick], _pick(ref.train.labels, pick))


def score_digits(generated: Outputs, floor: Outputs, test: Outputs) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """Label accuracy and per-digit FID of samples whose ``labels`` are the digits asked for, with their floors.

    The floors: the classifier's accuracy on the test split, and the FID of each digit of ``floor`` (real
    training images) to the same digit of the test split. Returns the metrics and the per-digit accuracy records.
    """
    if floor.labels is None or test.labels is None or generated.labels is None:
        raise ValueError("per-digit scores need the labels of every set")
    hits = {name: out.probs.argmax(1) == out.labels for name, out in (("generated", generated), ("real", test))}
    values: dict[str, Any] = {
        "label_accuracy": float(hits["generated"].float().mean()),
        "label_accuracy_floor": float(hits["real"].float().mean()),
    }
    fids: dict[str, list[float]] = {"": [], "_floor": []}
    for digit in range(N_CLASSES):
        test_stats = metrics.feature_stats(test.features[test.labels == digit])
        for suffix, out in (("", generated), ("_floor", floor)):
            stats = metrics.feature_stats(out.features[out.labels == digit])
            fids[suffix].append(metrics.frechet_distance(*stats, *test_stats))
    for suffix, per_digit in fids.items():
        values[f"digit_fid_mean{suffix}"] = sum(per_digit) / N_CLASSES
        values[f"digit_fid_worst{suffix}"] = max(per_digit)
    values["digit_fid_worst_digit"] = max(range(N_CLASSES), key=fids[""].__getitem__)
    values["digit_fid"] = {str(d): v for d, v in enumerate(fids[""])}
    records = [
        {
            "digit": d,
            "generated": float(hits["generated"][generated.labels == d].float().mean()),
            "real": float(hits["real"][test.labels == d].float().mean()),
        }
        for d in range(N_CLASSES)
    ]
    return values, records


def _pick(labels: torch.Tensor | None, index: torch.Tensor) -> torch.Tensor | None:
    return None if labels is None else labels[index]
