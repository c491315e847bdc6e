"""The selection dial (`wgan.selection.selection`, `wgan sample --select PSI`): systematic quotas; the realism score;
the rebalancing of a candidate pool (quotas by the training images' clusters, passing candidates first, failing
ones only where a cluster falls short); the sampler's candidates are the seed's first latents, picked
deterministically, the digits asked for of a conditional generator; the command draws exactly those; bad input is
one line, exit code 2.

Tiny untrained networks keep it fast: what is tested is which candidates are kept and why, not image quality
(docs/benchmarks.md, "Truncation", has that)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_command import (  # noqa: F401  (model, conditional_model: fixtures of small saved generators)
    LATENT,
    NORM,
    conditional_model,
    model,
    run,
)
from test_render import read_png

from wgan.classifier.classifier import Classifier, RealFeatures, run_classifier, save_real_features
from wgan.data.model_file import load_model, save_model
from wgan.images.generate import generate
from wgan.images.render import make_grid
from wgan.models.conditional import ConditionalGenerator
from wgan.models.networks import Generator
from wgan.models.sampling import balanced_digits, draw_latents, sample
from wgan.selection.selection import ACCEPT, Realism, quotas, rebalanced, select_latents, selected_latents


def test_quotas_round_each_share_down_or_up_sum_to_n_and_are_right_on_average() -> None:
    counts = torch.tensor([5, 0, 30, 1, 64])  # shares of 7 places: 0.35, 0, 2.1, 0.07, 4.48
    exact = counts.double() * 7 / 100
    seen = torch.stack([quotas(counts, 7, offset) for offset in torch.arange(1000).double() / 1000])
    assert bool((seen.sum(1) == 7).all())
    assert bool(((seen >= exact.floor()) & (seen <= exact.ceil())).all())
    torch.testing.assert_close(seen.double().mean(0), exact, atol=2e-3, rtol=0)
    assert quotas(torch.tensor([1, 1, 2]), 2, 0.0).tolist() == [0, 1, 1]


def test_rebalancing_gives_the_real_shares_from_passing_candidates_first() -> None:
    """Two clusters drawn 1 : 1, the training images 3 : 1: the picks are 3 : 1, all of them passing the cut."""
    gen = torch.Generator().manual_seed(0)
    cluster = torch.arange(32000) % 2
    score, order = torch.randn(32000, generator=gen), torch.rand(32000, generator=gen)
    picked = rebalanced(score, cluster, torch.tensor([7500, 2500]), 4000, 0.5, order, 0.3)
    assert picked.tolist() == sorted(set(picked.tolist())) and len(picked) == 4000
    assert torch.bincount(cluster[picked]).tolist() == [3000, 1000]
    assert bool((score[picked] >= score.median()).all())  # each cluster has passing candidates enough
    passing0 = ((cluster == 0) & (score >= score.median())).nonzero().squeeze(1)
    in_order = passing0[order[passing0].argsort(descending=True)[:3000]]  # the random order, not the best score
    assert sorted(in_order.tolist()) == picked[cluster[picked] == 0].tolist()


def test_a_short_cluster_takes_failing_candidates_and_an_empty_one_passes_its_places_on() -> None:
    """Cluster 1 needs 40 places but has 10 passing candidates: it takes all 10 and 30 failing ones. Cluster 2 (20
    places) has no candidate at all: its places go to passing candidates of the others."""
    score = torch.cat([torch.full((300,), 2.0), torch.full((10,), 2.0), torch.full((90,), 0.0)])
    cluster = torch.cat([torch.zeros(300), torch.ones(100)]).long()
    order = torch.rand(400, generator=torch.Generator().manual_seed(1))
    picked = rebalanced(score, cluster, torch.tensor([40, 40, 20]), 100, 0.5, order, 0.0)
    assert len(picked) == 100
    assert int((cluster[picked] == 1).sum()) == 40 and int((score[picked[cluster[picked] == 1]] == 2).sum()) == 10
    assert int((cluster[picked] == 0).sum()) == 60 and bool((score[picked[cluster[picked] == 0]] == 2).all())


def test_realism_is_above_one_inside_a_real_ball_and_below_far_away() -> None:
    real = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [10.0, 10.0]])
    realism = Realism.of(real, k=1)
    assert len(realism.reals) == 4  # the dense half: radius at most the median (the lone point's is not)
    score = realism.score(torch.tensor([[0.5, 0.5], [0.1, 0.0], [5.0, 5.0], [10.0, 10.0], [1.0, 1.0]]))
    assert score[0] > 1 and score[1] > 1  # near the dense square
    assert score[2] < 1  # between the square and the lone point
    assert score[3] < 1  # on the lone point, whose radius (the sparse half) is dropped
    assert score[4] > 1e6  # on a dense real point: as deep as it gets


def classifier() -> Classifier:
    torch.manual_seed(0)
    return Classifier(channels=(4, 8), feature_dim=16).eval()


def fake_reals(net: Classifier, generator: Generator | ConditionalGenerator | None = None, n: int = 400):
    """The "training images", labelled 0..9 in turn: noise, or other samples of ``generator`` (of those digits)."""
    labels = balanced_digits(n)
    if generator is None:
        images = torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    else:
        conditional = isinstance(generator, ConditionalGenerator)
        images = sample(generator, draw_latents((n,), generator.latent_dim, 99), labels if conditional else None)
    return run_classifier(net, images, labels=labels)


def tiny(cls: type = Generator) -> Generator | ConditionalGenerator:
    torch.manual_seed(0)
    return cls(latent_dim=8, hidden=(16, 32)).eval()


@pytest.mark.parametrize("psi", [0.3, 1.0])
def test_the_sampler_picks_among_the_seeds_first_latents_deterministically(psi: float) -> None:
    generator, net = tiny(), classifier()
    real = fake_reals(net, generator)
    wanted = torch.zeros(40, dtype=torch.int64)
    z = select_latents(generator, net, real, psi, 4, wanted)
    pool = draw_latents((math.ceil(40 / (ACCEPT * psi)),), 8, 4)
    index = torch.cdist(z, pool).argmin(1)
    assert torch.equal(pool[index], z)  # each one a candidate, the seed's own latents
    assert index.tolist() == sorted(set(index.tolist()))  # distinct, in stream order
    assert torch.equal(z, select_latents(generator, net, real, psi, 4, wanted))
    assert not torch.equal(z, select_latents(generator, net, real, psi, 5, wanted))
    if psi < 1:  # the cut: most picks pass it (each cluster has passing candidates to spare)
        score = Realism.of(real.features).score(run_classifier(net, sample(generator, pool)).features)
        assert float((score[index] >= score.quantile(1 - psi)).double().mean()) > 0.8


def test_a_conditional_generator_gets_each_digit_asked_for_from_candidates_of_that_digit() -> None:
    generator, net = tiny(ConditionalGenerator), classifier()
    wanted = torch.tensor([7, 3, 7, 7, 3] * 4)
    z = select_latents(generator, net, fake_reals(net, generator), 0.5, 2, wanted)
    pool = draw_latents((math.ceil(20 / (ACCEPT * 0.5)),), 8, 2)  # the candidates, asking 7, 3, 7, 7, 3, ... in turn
    index = torch.cdist(z, pool).argmin(1)
    assert torch.equal(pool[index], z)
    assert torch.equal(wanted[index % 20], wanted)  # each place got a candidate asked for its digit
    for digit in (3, 7):
        assert index[wanted == digit].tolist() == sorted(index[wanted == digit].tolist())


@pytest.fixture(scope="module")
def scorer(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small classifier and its "training-image" features, saved as the classifier stage saves them."""
    folder = tmp_path_factory.mktemp("classifier")
    net = classifier()
    save_model(net, folder / "classifier.pt")
    train = fake_reals(net)
    save_real_features(RealFeatures(train, train, torch.full((10,), 0.1)), folder / "real_features.pt")
    return folder / "classifier.pt", folder / "real_features.pt"


def test_sample_select_draws_the_selected_latents(model: Path, scorer: tuple[Path, Path], tmp_path: Path) -> None:  # noqa: F811
    files = ("--classifier", str(scorer[0]), "--real-features", str(scorer[1]))
    run("sample", "--model", str(model), "--n", "6", "--select", "0.5", *files, "--out", str(tmp_path / "s.png"))
    generator = load_model(model, Generator)
    z = selected_latents(generator, 0.5, 0, torch.zeros(6, dtype=torch.int64), *scorer)
    np.testing.assert_array_equal(read_png(tmp_path / "s.png"), make_grid(generate(generator, z, NORM), 8, 2, 2))
    assert not torch.equal(z, draw_latents((6,), LATENT, 0))  # the first latents did not all pass


def test_sample_select_keeps_a_conditional_generators_digits(
    conditional_model: Path,  # noqa: F811
    scorer: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    files = ("--classifier", str(scorer[0]), "--real-features", str(scorer[1]))
    generator = load_model(conditional_model, ConditionalGenerator)
    for digit, labels in (("3", torch.full((6,), 3)), (None, torch.arange(6))):  # --digit 3; 0, 1, ... in turn
        out = tmp_path / f"{digit}.png"
        asked = ("--digit", digit) if digit else ()
        run(
            "sample",
            "--model",
            str(conditional_model),
            "--n",
            "6",
            *asked,
            "--select",
            "0.5",
            *files,
            "--out",
            str(out),
        )
        z = selected_latents(generator, 0.5, 0, labels, *scorer)
        expected = make_grid(generate(generator, z, NORM, labels), 8, 2, 2)
        np.testing.assert_array_equal(read_png(out), expected)


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--select", "0"], "argument --select: expected a number in (0, 1] (1: rebalancing alone), got '0'"),
        (["--select", "nan"], "argument --select: expected a number in (0, 1]"),
        (["--select", "0.5", "--truncation", "0.5"], "--select and --truncation are two fidelity dials; pass one"),
        (["--select", "0.5"], "classifier file nowhere/c.pt is missing; --select needs the classifier stage's"),
        (["--select", "0.5", "--classifier", "{c}"], "real-data features file nowhere/f.pt is missing; --select needs"),
        (["--select", "0.5", "--classifier", "{c}", "--real-features", "{w}"], "come from different classifier runs"),
    ],
)
def test_bad_select_input_is_one_line_and_exit_2(
    args: list[str],
    expect: str,
    model: Path,  # noqa: F811
    scorer: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys,
) -> None:
    wide = tmp_path.parent / f"{tmp_path.name}-wide.pt"
    net = Classifier(channels=(4, 8), feature_dim=24)
    save_model(net, wide)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WGAN_DEBUG", raising=False)
    args = [a.format(c=wide, w=scorer[1]) for a in args]
    defaults = ["--classifier", "nowhere/c.pt", "--real-features", "nowhere/f.pt"]
    with pytest.raises(SystemExit) as exit_info:
        run("sample", "--model", str(model), *defaults, *args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and expect in err, err
    assert list(tmp_path.iterdir()) == []  # nothing written
