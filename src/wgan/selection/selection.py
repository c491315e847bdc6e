"""Selection (``wgan sample --select PSI``): rejection sampling that trades variety for fidelity without moving a
sample, and gives back most of the variety that a plain cut takes.

Candidates are the latents of the seed's stream; each is drawn and seen by the classifier (the classifier
stage's model; never the judge, which must stay unseen by everything that picks). Two things decide whether it is
kept:

1. **realism**: whether its realism score (Kynkaenniemi et al. 2019: ``max_j r_j / |f - real_j|`` over the dense
   half of ``REALISM_REALS`` training images, ``r_j`` their k-NN radii) is in the generator's top PSI share, the
   (1 - PSI)-quantile of a fit set of the generator's own samples;
2. **rebalancing**: its cluster, one of ``N_CLUSTERS`` k-means clusters of the training images' features. It is
   kept if a uniform draw falls below its cluster's acceptance for candidates that pass (1), or for those that
   fail it: each cluster keeps the training images' share of the kept samples, from the passing candidates
   first and from failing ones only where those fall short; ``ACCEPT * PSI`` of all candidates are kept. The
   generator's over-drawn modes are thinned, its under-drawn ones kept whole, and a mode it draws poorly keeps
   its share instead of vanishing at the cut (a realism cut alone costs that variety: FID 45-76% worse at PSI 0.7
   in a version without the fill, seed 0).

PSI 1 is rebalancing alone. Against the density truncation (``--truncation``, which moves samples), the measured
trade-off is several times better in both feature spaces (docs/benchmarks.md, "Truncation"). The price: it needs
the classifier stage's outputs at sampling time, it costs ``1 / (PSI * ACCEPT)`` candidates per sample plus a fit
of ``FIT_SIZE`` samples, and a latent walk cannot use it (a rejected frame breaks the walk).

A conditional generator is fitted per digit: each digit's candidates meet its own training images' cluster shares
and its own realism quantile, so every digit asked for is kept at the same rate. Everything is seeded and
deterministic on the CPU for a given generator, classifier, seed and PSI.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from wgan import paths
from wgan.classifier.classifier import Classifier, FeatureNet, Outputs, load_real_features, run_classifier
from wgan.data.model_file import load_model
from wgan.data.prepared import IMAGE_SHAPE
from wgan.errors import UserError
from wgan.evaluation import metrics
from wgan.models.conditional import ConditionalGenerator
from wgan.models.networks import Generator
from wgan.models.sampling import (
    BATCH_SIZE,
    FIT_SEED,
    KMEANS_ITERATIONS,
    balanced_digits,
    draw_latents,
    kmeans,
    nearest,
    sample,
)

REALISM_REALS = 20_000  # training images the realism score and the clusters measure against (a seeded subset)
REALISM_SEED = 7  # the subset's own stream
REALISM_K = 3  # the k of the reals' k-NN radii (the paper's, and evaluate.pr_k's default)
N_CLUSTERS = 1024  # chosen on seed 0 among 64-1024 (docs/benchmarks.md); about 20 training images per cluster
ACCEPT = 0.4  # kept per candidate that passes: 2.5 survivors a place, the rebalancing's room to choose
FIT_SIZE = 20_000  # the fit samples: latents from models.sampling.FIT_SEED, the density truncation's stream
CHUNK = 5_000  # candidates drawn and scored at a time; fixed, so the stream does not depend on --n
HINT = (
    "--select needs the classifier stage's outputs: run `dvc repro classifier` or pass --classifier and --real-features"
)
MAX_CANDIDATES_PER_SAMPLE = 50  # times the expected 1 / (PSI * ACCEPT) before giving up with an error


def check_select(psi: float) -> None:
    """A ``ValueError`` naming the bad value unless ``psi`` is in (0, 1]."""
    if not 0 < psi <= 1:  # `not` also refuses NaN
        raise ValueError(f"select psi must be in (0, 1] (1: rebalancing alone; smaller: truer digits), got {psi}")


def seeded_subset(real: Outputs, size: int = REALISM_REALS) -> Outputs:
    """``size`` rows of the training images' classifier outputs, picked by ``REALISM_SEED`` (never the test split:
    the evaluate stage scores against it)."""
    order = torch.randperm(len(real.features), generator=torch.Generator().manual_seed(REALISM_SEED))[:size]
    return Outputs(real.features[order], real.probs[order], None if real.labels is None else real.labels[order])


@dataclass(frozen=True)
class Realism:
    """Kynkaenniemi et al.'s realism score against a set of real features: the dense half (k-NN radius at most the
    median; the paper drops the sparse half, whose large balls would call anything real) and their radii."""

    reals: torch.Tensor  # [R, D]
    radii: torch.Tensor  # [R]

    @classmethod
    def of(cls, real: torch.Tensor, k: int = REALISM_K) -> Realism:
        radii = metrics.knn_radii(real, k)
        dense = radii <= radii.median()
        return cls(real[dense].float(), radii[dense])

    def score(self, features: torch.Tensor) -> torch.Tensor:
        """Each feature row's realism: >= 1 inside some real point's ball, larger the deeper."""
        score = torch.empty(len(features))
        for rows, dist in metrics.distance_chunks(features.float(), self.reals):
            score[rows] = (self.radii / dist.clamp_min(1e-12)).max(1).values
        return score


def acceptance(
    real_counts: torch.Tensor, counts: torch.Tensor, passing_counts: torch.Tensor, rate: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each cluster's acceptance [K] of a candidate that passes the realism cut, and of one that fails it.

    ``counts`` fit samples lie in each cluster, ``passing_counts`` of them pass. A cluster's candidates are kept
    at the rate that gives it the training images' share (``real_counts``) of the kept ones, passing candidates
    first; failing ones fill what the passing ones leave short (a mode the generator draws poorly would otherwise
    vanish); the overall rate is ``rate``, and what clusters short of even their failing candidates miss goes to
    the others in proportion. A cluster no fit sample reached keeps everything that reaches it; one with no
    training image keeps nothing. In expectation this is the batch dial of ``benchmarks/selection_dials.py``
    (``rebalanced:RATE:CUT``): quotas by the training images' shares, filled from the survivors of the cut."""
    n = float(counts.sum())
    real_share = real_counts.double() / real_counts.sum()
    passing = torch.where(counts > 0, passing_counts.double() / counts.clamp_min(1), 1.0)

    def at(scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        per_candidate = torch.where(counts > 0, scale * real_share * n / counts.clamp_min(1), torch.inf)
        keep_passing = torch.where(passing > 0, per_candidate / passing, torch.inf).clamp(max=1.0)
        keep_failing = torch.where(passing < 1, (per_candidate - passing) / (1 - passing), 0.0).clamp(0.0, 1.0)
        keep_failing[counts == 0] = 1.0
        return torch.nan_to_num(keep_passing, nan=0.0), keep_failing

    def kept(scale: float) -> float:
        keep_passing, keep_failing = at(scale)
        return float((passing_counts * keep_passing + (counts - passing_counts) * keep_failing).sum()) / n

    high = rate
    while kept(high) < rate and high < 1e6 * rate:  # widen until the rate is reached (or cannot be)
        high *= 2
    low = rate  # kept(rate) <= rate: the shares alone, before what short clusters miss is handed on
    for _ in range(60):  # bisection; kept() increases with the scale
        mid = (low + high) / 2
        low, high = (mid, high) if kept(mid) < rate else (low, mid)
    return at(high)


@dataclass(frozen=True)
class Selection:
    """The selection fitted to one generator and classifier at one PSI: the realism reals, the clusters, and per
    group (each digit of a conditional generator; one group otherwise) the realism cut and the acceptances."""

    psi: float
    realism: Realism
    centres: torch.Tensor  # [N_CLUSTERS, D], of the training images' features
    cuts: torch.Tensor  # [G]: a candidate of group g passes (1) when its realism is at least cuts[g]
    keep_passing: torch.Tensor  # [G, N_CLUSTERS]: the probability that a passing candidate is kept, per cluster
    keep_failing: torch.Tensor  # [G, N_CLUSTERS]: the same for a failing one

    @classmethod
    def fit(
        cls,
        generator: Generator | ConditionalGenerator,
        classifier: FeatureNet,
        real_train: Outputs,  # the classifier's outputs on the training split (models/real_features.pt)
        psi: float,
        fit_size: int = FIT_SIZE,
        n_clusters: int = N_CLUSTERS,
        n_reals: int = REALISM_REALS,
    ) -> Selection:
        """Deterministic on the CPU: seeded reals, fit latents, starting centres and iteration count."""
        check_select(psi)
        real = seeded_subset(real_train, n_reals)
        centres = kmeans(real.features.float(), min(n_clusters, len(real.features)), KMEANS_ITERATIONS)
        realism = Realism.of(real.features)
        real_cluster = nearest(real.features.float(), centres)

        conditional = isinstance(generator, ConditionalGenerator)
        labels = balanced_digits(fit_size, generator.n_classes) if conditional else None
        z = draw_latents((fit_size,), generator.latent_dim, FIT_SEED)
        features = run_classifier(classifier, sample(generator, z, labels), BATCH_SIZE).features
        score, cluster = realism.score(features), nearest(features, centres)
        groups = labels if labels is not None else torch.zeros(fit_size, dtype=torch.int64)

        cuts, keep_passing, keep_failing = [], [], []
        for g in range(int(groups.max()) + 1):
            mine = groups == g
            cut = float(score[mine].quantile(1 - psi)) if psi < 1 else -torch.inf
            reals_of_g = real_cluster[real.labels == g] if conditional else real_cluster
            k = len(centres)
            keep = acceptance(
                torch.bincount(reals_of_g, minlength=k),
                torch.bincount(cluster[mine], minlength=k),
                torch.bincount(cluster[mine & (score >= cut)], minlength=k),
                ACCEPT * psi,
            )
            cuts.append(cut)
            keep_passing.append(keep[0])
            keep_failing.append(keep[1])
        return cls(
            psi,
            realism,
            centres,
            torch.tensor(cuts, dtype=torch.float32),
            torch.stack(keep_passing).float(),
            torch.stack(keep_failing).float(),
        )

    def kept(self, features: torch.Tensor, groups: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
        """Which candidates are kept (a bool mask), from their classifier features, groups and uniform draws."""
        cluster = nearest(features.float(), self.centres)
        passes = self.realism.score(features) >= self.cuts[groups]
        keep = torch.where(passes, self.keep_passing[groups, cluster], self.keep_failing[groups, cluster])
        return uniform < keep


def select_latents(
    generator: Generator | ConditionalGenerator,
    classifier: FeatureNet,
    selection: Selection,
    seed: int,
    wanted: torch.Tensor,
) -> torch.Tensor:
    """The latents [len(wanted), latent_dim] of the first candidates of ``seed``'s stream that ``selection`` keeps.

    ``wanted``: each output's digit for a conditional generator (it asks for them), zeros for an unconditional one;
    output ``i`` is the next kept candidate of its digit. Candidates come ``CHUNK`` at a time from one generator
    seeded with ``seed`` (latents, then a uniform draw each), asking for the wanted digits in turn: the same seed,
    PSI and models give the same latents, whatever else was asked."""
    conditional = isinstance(generator, ConditionalGenerator)
    values, need = wanted.unique(return_counts=True)
    kept_z: list[list[torch.Tensor]] = [[] for _ in values]
    have = torch.zeros_like(need)
    rng = torch.Generator().manual_seed(seed)
    limit = MAX_CANDIDATES_PER_SAMPLE * len(wanted) / (selection.psi * ACCEPT) + CHUNK
    drawn = 0
    while bool((have < need).any()):
        if drawn >= limit:
            raise UserError(
                f"the selection kept {int(torch.minimum(have, need).sum())} of {drawn} candidates, short of "
                f"{len(wanted)}; raise --select towards 1, or ask for fewer (--n)"
            )
        z = torch.randn(CHUNK, generator.latent_dim, generator=rng)
        uniform = torch.rand(CHUNK, generator=rng)
        groups = values[torch.arange(drawn, drawn + CHUNK) % len(values)]
        images = sample(generator, z, groups if conditional else None)
        kept = selection.kept(run_classifier(classifier, images, BATCH_SIZE).features, groups, uniform)
        for i, v in enumerate(values):
            mine = z[kept & (groups == v)]
            kept_z[i].append(mine)
            have[i] += len(mine)
        drawn += CHUNK

    out = torch.empty(len(wanted), generator.latent_dim)
    for i, v in enumerate(values):
        mine = wanted == v
        out[mine] = torch.cat(kept_z[i])[: int(mine.sum())]  # in stream order
    return out


def selected_latents(
    generator: Generator | ConditionalGenerator,
    psi: float,
    seed: int,
    wanted: torch.Tensor,
    classifier_path: str | os.PathLike[str] = paths.CLASSIFIER,
    features_path: str | os.PathLike[str] = paths.REAL_FEATURES,
) -> torch.Tensor:
    """``select_latents`` with the classifier stage's files (``wgan sample --select PSI``): loaded, checked to
    belong together, fitted at ``psi``."""
    if tuple(generator.img_shape) != IMAGE_SHAPE:
        raise UserError(
            f"--select scores samples with the classifier, which needs {list(IMAGE_SHAPE)} images; this generator "
            f"makes {list(generator.img_shape)}: leave --select out"
        )
    classifier = load_model(classifier_path, Classifier, HINT)
    real = load_real_features(features_path, HINT)
    if real.train.features.shape[1] != classifier.feature_dim:
        raise UserError(
            f"{features_path} holds {real.train.features.shape[1]}-dim features but {classifier_path} makes "
            f"{classifier.feature_dim}-dim ones: they come from different classifier runs; {HINT}"
        )
    return select_latents(generator, classifier, Selection.fit(generator, classifier, real.train, psi), seed, wanted)
