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


def kept_per_cluster(
    counts: torch.Tensor, passing: torch.Tensor, keep: tuple[torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    """The expected number of kept candidates per cluster."""
    return passing * keep[0] + (counts - passing) * keep[1]


def test_the_passing_candidates_give_the_real_shares_where_they_suffice() -> None:
    real, counts, passing = torch.tensor([50, 30, 20]), torch.tensor([100, 50, 50]), torch.tensor([60, 30, 10])
    keep = acceptance(real, counts, passing, rate=0.2)  # 40 of 200 kept: 20, 12 and 8
    torch.testing.assert_close(
        kept_per_cluster(counts, passing, keep), torch.tensor([20, 12, 8.0], dtype=torch.float64)
    )
    torch.testing.assert_close(keep[0], torch.tensor([1 / 3, 0.4, 0.8], dtype=torch.float64))
    assert keep[1].tolist() == [0, 0, 0]  # no failing candidate is needed


def test_failing_candidates_fill_only_what_the_passing_ones_leave_short() -> None:
    """Cluster 1 needs 16 of 40 kept but has 4 passing candidates: all 4 are kept, and 12 of its 36 failing ones."""
    real, counts, passing = torch.tensor([60, 40]), torch.tensor([160, 40]), torch.tensor([96, 4])
    keep = acceptance(real, counts, passing, rate=0.2)
    torch.testing.assert_close(kept_per_cluster(counts, passing, keep), torch.tensor([24, 16.0], dtype=torch.float64))
    torch.testing.assert_close(keep[0], torch.tensor([0.25, 1], dtype=torch.float64))
    torch.testing.assert_close(keep[1], torch.tensor([0, 1 / 3], dtype=torch.float64))


def test_what_a_short_cluster_misses_goes_to_the_others_and_the_rate_holds() -> None:
    """Cluster 1 holds 90% of the training images but 2 of 100 candidates: it keeps both, and the 38 other places
    go to clusters 0 and 2 in proportion, passing candidates first (cluster 2 has 15, and fills 4 places with
    failing ones). A cluster no fit sample reached keeps all that reach it; one without training images keeps
    none."""
    real, counts, passing = (
        torch.tensor([5, 90, 5, 3, 0]),
        torch.tensor([46, 2, 45, 0, 7]),
        torch.tensor([30, 1, 15, 0, 7]),
    )
    keep = acceptance(real, counts, passing, rate=0.4)
    kept = kept_per_cluster(counts, passing, keep)
    assert float(kept.sum()) == pytest.approx(40)
    torch.testing.assert_close(kept[:3], torch.tensor([19, 2, 19.0], dtype=torch.float64))
    assert keep[0][2] == 1 and 0 < keep[1][2] < 1 and keep[0][0] < 1 and keep[1][0] == 0
    assert keep[0][3] == 1 and keep[1][3] == 1 and keep[0][4] == 0 and keep[1][4] == 0


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
def test_the_fit_cuts_at_the_quantile_and_keeps_accept_times_psi(psi: float) -> None:
    generator, net = tiny(), classifier()
    fitted = small_fit(generator, net, psi)
    features = run_classifier(net, sample(generator, draw_latents((2000,), 8, sel.FIT_SEED))).features
    passing = fitted.realism.score(features) >= fitted.cuts[0]
    assert float(passing.double().mean()) == pytest.approx(psi, abs=1e-3)
    cluster = nearest(features, fitted.centres)
    keep = torch.where(passing, fitted.keep_passing[0, cluster], fitted.keep_failing[0, cluster])
    assert float(keep.double().mean()) == pytest.approx(ACCEPT * psi, abs=1e-4)  # on the fit set, exactly
    for table in (fitted.keep_passing, fitted.keep_failing):
        assert table.shape == (1, 16) and bool(((table >= 0) & (table <= 1)).all())


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
    assert fitted.cuts.shape == (10,) and fitted.keep_passing.shape == (10, 16)  # one fit per digit
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
    none = torch.zeros_like(fitted.keep_passing)
    closed = Selection(fitted.psi, fitted.realism, fitted.centres, fitted.cuts, none, none)
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
