"""Selection (``wgan sample --select PSI``): rejection sampling that trades variety for fidelity without moving a
sample, and gives back most of the variety that a plain cut takes.

Candidates are the latents of the seed's stream; each is drawn and seen by the classifier (the classifier
stage's model; never the judge, which must stay unseen by everything that picks). A candidate is kept when it
passes two tests:

1. **realism**: its realism score (Kynkaenniemi et al. 2019: ``max_j r_j / |f - real_j|`` over the dense half of
   ``REALISM_REALS`` training images, ``r_j`` their k-NN radii) is in the generator's top PSI share, the
   (1 - PSI)-quantile of a fit set of the generator's own samples;
2. **rebalancing**: a uniform draw falls below its cluster's acceptance. The clusters are ``N_CLUSTERS`` k-means
   clusters of the training images' features; a cluster's acceptance is proportional to its share of the training
   images over its share of the fit samples that pass (1), capped at 1 and scaled so that ``ACCEPT`` of those pass.
   The generator's over-drawn modes are thinned and its under-drawn ones kept whole: a realism cut alone keeps the
   generator's favourite digits and starves the rest.

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
ACCEPT = 0.4  # share of the realism survivors that rebalancing keeps: its room to thin over-drawn modes
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


def acceptance(real_counts: torch.Tensor, passing_counts: torch.Tensor, accept: float = ACCEPT) -> torch.Tensor:
    """Each cluster's acceptance [K] in [0, 1]: proportional to real share / generated share, capped at 1, scaled
    so that the passing samples (``passing_counts`` per cluster) are kept at the rate ``accept`` on average.

    A cluster the fit never reached gets 1 (keep whatever reaches it), one with no real image 0. Uncapped, the
    kept samples' cluster shares are the real ones; the cap leaves the most under-drawn clusters short instead of
    thinning everything else to match them."""
    real_share = real_counts.double() / real_counts.sum()
    gen_share = passing_counts.double() / passing_counts.sum()
    ratio = torch.where(gen_share > 0, real_share / gen_share, torch.inf)
    ratio[real_counts == 0] = 0.0
    seen = ratio[torch.repeat_interleave(torch.arange(len(ratio)), passing_counts)]  # one entry per passing sample

    def kept(scale: float) -> float:
        return float(torch.clamp(seen / scale, max=1.0).mean())

    if not bool((seen > 0).any()):  # nothing that passes lies where training images do: none of it is kept
        return torch.isinf(ratio).double()
    if kept(float(seen.max())) >= accept:  # no cap binds at the rate asked for: the scale in closed form
        return torch.clamp(ratio * (accept / float(seen.mean())), max=1.0)
    low, high = float(seen[seen > 0].min()) * accept / 2, float(seen.max())  # kept(low) >= accept > kept(high)
    for _ in range(100):  # bisection on the scale; kept() decreases in it
        mid = (low * high) ** 0.5
        low, high = (mid, high) if kept(mid) >= accept else (low, mid)
    return torch.clamp(ratio / high, max=1.0)


@dataclass(frozen=True)
class Selection:
    """The selection fitted to one generator and classifier at one PSI: the realism reals, the clusters, and per
    group (each digit of a conditional generator; one group otherwise) the realism cut and the acceptances."""

    psi: float
    realism: Realism
    centres: torch.Tensor  # [N_CLUSTERS, D], of the training images' features
    cuts: torch.Tensor  # [G]: a candidate of group g passes (1) when its realism is at least cuts[g]
    accept: torch.Tensor  # [G, N_CLUSTERS]: the probability that a passing candidate is kept, per cluster

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

        cuts, accepts = [], []
        for g in range(int(groups.max()) + 1):
            mine = groups == g
            cut = float(score[mine].quantile(1 - psi)) if psi < 1 else -torch.inf
            passing = mine & (score >= cut)
            reals_of_g = real_cluster[real.labels == g] if conditional else real_cluster
            cuts.append(cut)
            accepts.append(
                acceptance(
                    torch.bincount(reals_of_g, minlength=len(centres)),
                    torch.bincount(cluster[passing], minlength=len(centres)),
                )
            )
        return cls(psi, realism, centres, torch.tensor(cuts, dtype=torch.float32), torch.stack(accepts).float())

    def kept(self, features: torch.Tensor, groups: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
        """Which candidates are kept (a bool mask), from their classifier features, groups and uniform draws."""
        score = self.realism.score(features)
        return (score >= self.cuts[groups]) & (uniform < self.accept[groups, nearest(features.float(), self.centres)])


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
