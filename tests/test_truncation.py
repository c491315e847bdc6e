"""The density truncation (`sample(..., truncation=PSI)`, `wgan sample/interpolate --truncation PSI`): None or 1 is
the untruncated generator bit for bit; PSI pulls each hidden activation to within the PSI-quantile radius of its
nearest centre and leaves those inside alone; deterministic; conditional generators keep their digits; no hook is
left on the model; bad values are a `ValueError`, and on the command line one line with exit code 2.

Tiny generators and a small fit (``fit`` below) keep the quick tests fast; what is tested is where the activations
go, not image quality (docs/benchmarks.md, "Truncation", has that)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_command import LATENT, NORM, model, run  # noqa: F401  (model: the fixture of a small saved generator)
from test_gif import read_gif
from test_render import read_png

from wgan.data.model_file import load_model
from wgan.images.generate import generate, sample_pixels, walk_pixels
from wgan.images.render import make_grid
from wgan.models.conditional import ConditionalGenerator
from wgan.models.networks import Generator
from wgan.models.sampling import (
    DensityTruncation,
    balanced_digits,
    draw_latents,
    nearest,
    sample,
    sample_digits,
    truncation_layer,
)

HIDDEN = (16, 32, 32)  # three blocks: the truncation acts on the second's output


def tiny(cls: type = Generator) -> Generator | ConditionalGenerator:
    torch.manual_seed(0)
    return cls(latent_dim=8, hidden=HIDDEN)


def fit(generator: Generator | ConditionalGenerator) -> DensityTruncation:
    return DensityTruncation.fit(generator, fit_size=2000, n_centres=32, iterations=10)


def hidden_after_truncation(
    generator: Generator | ConditionalGenerator,
    z: torch.Tensor,
    labels: torch.Tensor | None = None,
    psi: float | None = None,
    density: DensityTruncation | None = None,
) -> torch.Tensor:
    """The activations the block after the truncated one receives (after the truncation hook, if any)."""
    mlp = generator.net.model if isinstance(generator, ConditionalGenerator) else generator.model
    layers = list(mlp)
    following = layers[layers.index(truncation_layer(generator)) + 1]
    seen: list[torch.Tensor] = []
    handle = following.register_forward_pre_hook(lambda m, inputs: seen.append(inputs[0].clone()))
    try:
        sample(generator, z, labels, 64, psi, density)
    finally:
        handle.remove()
    return torch.cat(seen)


def test_the_truncated_layer_is_the_second_to_last_hidden_block() -> None:
    default = Generator()
    assert list(default.model).index(truncation_layer(default)) == 7  # after Linear(256, 512), BatchNorm1d
    conditional = ConditionalGenerator(hidden=(32, 64))
    assert truncation_layer(conditional) is conditional.net.model[1]  # two blocks: the first
    one = Generator(hidden=(32,))
    assert truncation_layer(one) is one.model[1]


@pytest.mark.parametrize("cls", [Generator, ConditionalGenerator])
@pytest.mark.parametrize("absent", [None, 1.0])
def test_no_truncation_is_the_plain_generator_bit_for_bit(cls: type, absent: float | None) -> None:
    generator = tiny(cls)
    far = torch.full((10, 8), 10.0)  # beyond every fit sample: even the radius at PSI 1 would pull these in
    z = torch.cat([draw_latents((40,), 8, seed=11), far])
    labels = balanced_digits(50) if cls is ConditionalGenerator else None
    with torch.no_grad():
        expected = generator.eval()(z, *(() if labels is None else (labels,)))
    assert torch.equal(sample(generator, z, labels, truncation=absent), expected)
    if cls is ConditionalGenerator:
        assert torch.equal(sample_digits(generator, labels[:40], 11, truncation=absent), expected[:40])


@pytest.mark.parametrize("cls", [Generator, ConditionalGenerator])
def test_samples_are_pulled_to_the_radius_and_those_inside_stay(cls: type) -> None:
    generator = tiny(cls)
    density = fit(generator)
    z = draw_latents((400,), 8, seed=1)
    labels = balanced_digits(400) if cls is ConditionalGenerator else None
    plain = hidden_after_truncation(generator, z, labels)
    plain_centres = density.centres[nearest(plain, density.centres)]
    plain_dist = (plain - plain_centres).norm(dim=1)
    images = sample(generator, z, labels)
    for psi in (0.8, 0.4, 0.1):
        r = density.radius(psi)
        h = hidden_after_truncation(generator, z, labels, psi, density)
        dist = (h - density.centres[nearest(h, density.centres)]).norm(dim=1)
        inside = plain_dist <= r
        assert 0 < int(inside.sum()) < len(z)  # both kinds are there
        assert torch.equal(h[inside], plain[inside])  # untouched, bit for bit
        assert bool((dist <= torch.minimum(plain_dist, torch.tensor(r)) + 1e-4).all())  # never farther out
        moved = (h[~inside] - plain_centres[~inside]).norm(dim=1)  # onto the sphere of radius r, no farther in
        torch.testing.assert_close(moved, torch.full_like(moved, r))
        truncated = sample(generator, z, labels, truncation=psi, density=density)
        assert torch.equal(truncated[inside], images[inside])  # labels kept: same digit, same image
        assert not torch.equal(truncated[~inside], images[~inside])


def test_the_radius_is_the_quantile_of_the_fit_distances() -> None:
    density = fit(tiny())
    assert density.distances.shape == (2000,) and bool((density.distances.diff() >= 0).all())
    for psi in (0.1, 0.5, 0.9):
        share = float((density.distances <= density.radius(psi)).float().mean())
        assert abs(share - psi) < 1e-3


def test_fit_and_sample_are_deterministic() -> None:
    generator = tiny(ConditionalGenerator)
    a, b = fit(generator), fit(generator)
    assert torch.equal(a.centres, b.centres) and torch.equal(a.distances, b.distances)
    labels = torch.tensor([3, 5, 7] * 10)
    first = sample(generator, draw_latents((30,), 8, seed=2), labels, truncation=0.3, density=a)
    assert torch.equal(first, sample(generator, draw_latents((30,), 8, seed=2), labels, truncation=0.3, density=b))
    assert not torch.equal(first, sample(generator, draw_latents((30,), 8, seed=3), labels, truncation=0.3, density=b))
    # (the default fit's determinism: the slow test below, where the command and the library fit apart)


def test_the_hook_is_gone_afterwards_even_on_an_error() -> None:
    generator = tiny()
    z = draw_latents((20,), 8, seed=0)
    before = sample(generator, z)
    density = fit(generator)
    assert not torch.equal(sample(generator, z, truncation=0.05, density=density), before)
    assert not truncation_layer(generator)._forward_hooks
    assert torch.equal(sample(generator, z), before)
    with pytest.raises(RuntimeError):  # a latent of the wrong width fails inside the hooked forward
        sample(generator, torch.zeros(3, 5), truncation=0.5, density=density)
    assert not truncation_layer(generator)._forward_hooks


@pytest.mark.parametrize("psi", [0.0, -1.0, 1.5, math.nan, math.inf])
def test_bad_truncation_is_a_value_error(psi: float) -> None:
    generator = tiny(ConditionalGenerator)
    message = rf"truncation psi must be in \(0, 1\] \(1: none; .*\), got {psi}"
    with pytest.raises(ValueError, match=message):
        sample(generator, draw_latents((2,), 8, seed=0), balanced_digits(2), truncation=psi)
    with pytest.raises(ValueError, match=message):
        sample_digits(generator, [1, 2], seed=0, truncation=psi)


@pytest.mark.parametrize("value", ["0", "-0.5", "nan", "x", "1.5", "inf"])
@pytest.mark.parametrize("sub", ["sample", "interpolate"])
def test_bad_flag_is_one_line_and_exit_2(
    sub: str,
    value: str,
    model: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WGAN_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        run(sub, "--model", str(model), "--truncation", value)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err == (
        f"error: argument --truncation: expected a number in (0, 1] (1: none), got {value!r}; see `wgan {sub} --help`\n"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.long  # fits of the default size (FIT_SIZE latents, N_CENTRES centres): 12-24 s, over make test's budget
def test_sample_and_interpolate_take_the_flag(model: Path, tmp_path: Path) -> None:  # noqa: F811
    generator = load_model(model, Generator)
    run("sample", "--model", str(model), "--n", "6", "--truncation", "0.2", "--out", str(tmp_path / "t.png"))
    run("sample", "--model", str(model), "--n", "6", "--truncation", "1", "--out", str(tmp_path / "one.png"))
    run("sample", "--model", str(model), "--n", "6", "--out", str(tmp_path / "plain.png"))
    truncated = generate(generator, draw_latents((6,), LATENT, 0), NORM, truncation=0.2)
    np.testing.assert_array_equal(read_png(tmp_path / "t.png"), make_grid(truncated, 8, 2, 2))
    np.testing.assert_array_equal(read_png(tmp_path / "one.png"), read_png(tmp_path / "plain.png"))
    assert not np.array_equal(read_png(tmp_path / "t.png"), read_png(tmp_path / "plain.png"))
    np.testing.assert_array_equal(sample_pixels(generator, 6, 0, NORM, truncation=0.2), truncated)

    args = ("--model", str(model), "--n", "2", "--steps", "4", "--points", "2", "--nrow", "2")
    run("interpolate", *args, "--truncation", "0.2", "--out", str(tmp_path / "w.gif"))
    frames, _, _ = read_gif(tmp_path / "w.gif")
    walk = walk_pixels(generator, 2, 4, 2, 0, NORM, truncation=0.2)
    np.testing.assert_array_equal(frames[0], make_grid(walk[0], 2, 2, 2))
    points = draw_latents((2, 2), LATENT, 0)
    start = generate(generator, points[0], NORM, truncation=0.2)  # every frame is truncated, the first too
    assert np.abs(walk[0].astype(int) - start.astype(int)).max() <= 1  # another batch: float rounding


def test_a_conditional_generator_is_fitted_on_every_digit_in_turn() -> None:
    """The fit of a conditional generator sees the activations of balanced digits (0, 1, ..., 9, 0, ...), not of one
    digit: its centres are those of k-means over exactly those activations."""
    from wgan.models.sampling import FIT_SEED, kmeans

    generator = tiny(ConditionalGenerator).eval()
    z = draw_latents((2000,), generator.latent_dim, FIT_SEED)
    balanced = hidden_after_truncation(generator, z, balanced_digits(2000))
    one_digit = hidden_after_truncation(generator, z, torch.zeros(2000, dtype=torch.int64))
    assert not torch.equal(balanced, one_digit)  # the digit moves the activations, so the test can tell
    assert torch.equal(fit(generator).centres, kmeans(balanced, 32, 10))
