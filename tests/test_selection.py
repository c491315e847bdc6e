"""The selection dial (`wgan.selection.selection`, `wgan sample --select PSI`): the acceptances give the training
images' cluster shares where no cap binds; the realism score; the fit cuts at the PSI-quantile and keeps ``ACCEPT``
of the survivors; the sampler returns the first kept candidates of the seed's stream, deterministically, the
digits asked for of a conditional generator; the command draws exactly those; bad input is one line, exit code 2.

Tiny untrained networks and small fits keep it fast: what is tested is which candidates are kept and why, not
image quality (docs/benchmarks.md, "Truncation", has that)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_command import LATENT, NORM, model, run  # noqa: F401  (model: the fixture of a small saved generator)
from test_render import read_png

from wgan.classifier.classifier import Classifier, Outputs, RealFeatures, run_classifier, save_real_features
from wgan.data.model_file import load_model, save_model
from wgan.images.generate import generate
from wgan.images.render import make_grid
from wgan.models.conditional import ConditionalGenerator
from wgan.models.networks import Generator
from wgan.models.sampling import balanced_digits, draw_latents, nearest, sample
from wgan.selection import selection as sel
from wgan.selection.selection import ACCEPT, CHUNK, Realism, Selection, acceptance, select_latents, selected_latents


def test_acceptance_gives_the_real_shares_where_no_cap_binds() -> None:
    real, passing = torch.tensor([50, 30, 20]), torch.tensor([60, 30, 10])
    accept = acceptance(real, passing).double()
    kept = passing * accept
    torch.testing.assert_close(kept / kept.sum(), torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64))
    assert float(kept.sum() / passing.sum()) == pytest.approx(ACCEPT)
    torch.testing.assert_close(accept, torch.tensor([1 / 3, 0.4, 0.8], dtype=torch.float64))


def test_acceptance_is_zero_where_nothing_passing_lies_near_training_images() -> None:
    accept = acceptance(torch.tensor([0, 5, 3]), torch.tensor([9, 0, 0]))
    assert torch.equal(accept, torch.tensor([0, 1, 1], dtype=torch.float64))  # unreached clusters still keep all


def test_acceptance_caps_the_most_under_drawn_cluster_and_keeps_the_rate() -> None:
    """Cluster 1 holds 90% of the reals but 10% of the passing samples: it keeps them all (cap 1), and the over-drawn
    cluster 0 is thinned just enough to keep ACCEPT in all; a cluster no fit sample reached keeps whatever reaches
    it, one no real image lies in keeps none."""
    accept = acceptance(torch.tensor([10, 90, 5, 0]), torch.tensor([90, 10, 0, 7])).double()
    torch.testing.assert_close(accept, torch.tensor([(0.4 * 107 - 10) / 90, 1, 1, 0], dtype=torch.float64))
    assert float((torch.tensor([90, 10, 0, 7]) * accept).sum() / 107) == pytest.approx(ACCEPT)


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


def fake_reals(net: Classifier, generator: Generator | ConditionalGenerator | None = None, n: int = 400) -> Outputs:
    """The "training images", labelled 0..9 in turn: noise, or other samples of ``generator`` (of those digits)."""
    labels = balanced_digits(n)
    if generator is None:
        images = torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    else:
        conditional = isinstance(generator, ConditionalGenerator)
        images = sample(generator, draw_latents((n,), generator.latent_dim, 99), labels if conditional else None)
    return run_classifier(net, images, labels=labels)


def small_fit(generator: Generator | ConditionalGenerator, net: Classifier, psi: float) -> Selection:
    return Selection.fit(generator, net, fake_reals(net, generator), psi, fit_size=2000, n_clusters=16)


def tiny(cls: type = Generator) -> Generator | ConditionalGenerator:
    torch.manual_seed(0)
    return cls(latent_dim=8, hidden=(16, 32)).eval()


@pytest.mark.parametrize("psi", [0.3, 0.7, 1.0])
def test_the_fit_cuts_at_the_quantile_and_keeps_accept_of_the_survivors(psi: float) -> None:
    generator, net = tiny(), classifier()
    fitted = small_fit(generator, net, psi)
    features = run_classifier(net, sample(generator, draw_latents((2000,), 8, sel.FIT_SEED))).features
    passing = fitted.realism.score(features) >= fitted.cuts[0]
    assert float(passing.double().mean()) == pytest.approx(psi, abs=1e-3)
    clusters = nearest(features[passing], fitted.centres)
    assert float(fitted.accept[0, clusters].double().mean()) == pytest.approx(ACCEPT, abs=1e-4)
    assert fitted.accept.shape == (1, 16) and bool(((fitted.accept >= 0) & (fitted.accept <= 1)).all())


def test_the_sampler_returns_the_first_kept_candidates_of_the_stream() -> None:
    generator, net = tiny(), classifier()
    fitted = small_fit(generator, net, 0.5)
    z = select_latents(generator, net, fitted, seed=4, wanted=torch.zeros(30, dtype=torch.int64))
    rng = torch.Generator().manual_seed(4)  # the stream, as documented: latents, then one uniform each
    candidates, uniform = torch.randn(CHUNK, 8, generator=rng), torch.rand(CHUNK, generator=rng)
    assert torch.equal(candidates[:10], draw_latents((10,), 8, 4))  # the seed's own latents come first
    features = run_classifier(net, sample(generator, candidates)).features
    kept = fitted.kept(features, torch.zeros(CHUNK, dtype=torch.int64), uniform)
    assert 0.1 < float(kept.double().mean()) < 0.3  # about PSI * ACCEPT = 0.2 of the candidates
    assert torch.equal(z, candidates[kept][:30])
    assert torch.equal(z, select_latents(generator, net, fitted, 4, torch.zeros(30, dtype=torch.int64)))
    assert not torch.equal(z, select_latents(generator, net, fitted, 5, torch.zeros(30, dtype=torch.int64)))


def test_a_conditional_generator_gets_each_digit_asked_for_from_candidates_of_that_digit() -> None:
    generator, net = tiny(ConditionalGenerator), classifier()
    fitted = small_fit(generator, net, 0.5)
    assert fitted.cuts.shape == (10,) and fitted.accept.shape == (10, 16)  # one fit per digit
    wanted = torch.tensor([7, 3, 7, 7, 3])
    z = select_latents(generator, net, fitted, seed=2, wanted=wanted)
    rng = torch.Generator().manual_seed(2)
    candidates, uniform = torch.randn(CHUNK, 8, generator=rng), torch.rand(CHUNK, generator=rng)
    asked = torch.tensor([3, 7]).repeat(CHUNK // 2)  # the digits wanted, in turn
    features = run_classifier(net, sample(generator, candidates, asked)).features
    kept = fitted.kept(features, asked, uniform)
    assert torch.equal(z[wanted == 7], candidates[kept & (asked == 7)][:3])
    assert torch.equal(z[wanted == 3], candidates[kept & (asked == 3)][:2])


def test_a_selection_that_keeps_nothing_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    generator, net = tiny(), classifier()
    fitted = small_fit(generator, net, 0.5)
    closed = Selection(fitted.psi, fitted.realism, fitted.centres, fitted.cuts, torch.zeros_like(fitted.accept))
    monkeypatch.setattr(sel, "MAX_CANDIDATES_PER_SAMPLE", 1)  # give up after the margin of one chunk and a bit
    monkeypatch.setattr(sel, "CHUNK", 500)
    with pytest.raises(sel.UserError, match=r"the selection kept 0 of 1000 candidates, short of 3; raise --select"):
        select_latents(generator, net, closed, 0, torch.zeros(3, dtype=torch.int64))


@pytest.fixture(scope="module")
def scorer(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small classifier and its "training-image" features, saved as the classifier stage saves them."""
    folder = tmp_path_factory.mktemp("classifier")
    net = classifier()
    save_model(net, folder / "classifier.pt")
    train = fake_reals(net)
    save_real_features(RealFeatures(train, train, torch.full((10,), 0.1)), folder / "real_features.pt")
    return folder / "classifier.pt", folder / "real_features.pt"


@pytest.mark.slow  # a fit of the default size: seconds
def test_sample_select_draws_the_selected_latents(model: Path, scorer: tuple[Path, Path], tmp_path: Path) -> None:  # noqa: F811
    files = ("--classifier", str(scorer[0]), "--real-features", str(scorer[1]))
    run("sample", "--model", str(model), "--n", "6", "--select", "0.5", *files, "--out", str(tmp_path / "s.png"))
    generator = load_model(model, Generator)
    z = selected_latents(generator, 0.5, 0, torch.zeros(6, dtype=torch.int64), *scorer)
    np.testing.assert_array_equal(read_png(tmp_path / "s.png"), make_grid(generate(generator, z, NORM), 8, 2, 2))
    assert not torch.equal(z, draw_latents((6,), LATENT, 0))  # the first latents did not all pass


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
