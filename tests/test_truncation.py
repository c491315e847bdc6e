"""Truncated latents (`draw_latents(..., truncation=PSI)`, `wgan sample/interpolate --truncation PSI`): absent or
inf is today's draw bit for bit; PSI keeps every entry within PSI by redrawing; deterministic per seed; bad values
are one-line errors with exit code 2."""

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
from wgan.models.networks import Generator
from wgan.models.sampling import draw_latents


@pytest.mark.parametrize("absent", [None, math.inf])
def test_no_truncation_is_the_plain_draw_bit_for_bit(absent: float | None) -> None:
    expected = torch.randn(7, 3, 100, generator=torch.Generator().manual_seed(11))
    assert torch.equal(draw_latents((7, 3), 100, seed=11, truncation=absent), expected)
    assert torch.equal(draw_latents((7, 3), 100, seed=11), expected)


@pytest.mark.parametrize("psi", [0.5, 1.0, 2.0])
def test_truncation_keeps_every_entry_within_psi(psi: float) -> None:
    z = draw_latents((2000,), 100, seed=0, truncation=psi)
    plain = draw_latents((2000,), 100, seed=0)
    assert z.shape == plain.shape and z.dtype == torch.float32
    assert float(z.abs().max()) <= psi
    inside = plain.abs() <= psi
    assert torch.equal(z[inside], plain[inside])  # redrawn only where the plain draw fell outside
    assert float((z[~inside].abs() < psi).float().mean()) == 1.0


def test_truncation_redraws_rather_than_clips() -> None:
    z = draw_latents((4000,), 100, seed=1, truncation=0.5)
    assert int((z.abs() == 0.5).sum()) == 0  # clipping would put ~62% of the entries on the bounds
    # the normal truncated to [-0.5, 0.5] is close to uniform there: its standard deviation is 0.2839 (uniform: 0.2887)
    assert abs(float(z.std()) - 0.2839) < 0.002
    assert abs(float(z.mean())) < 0.002


def test_truncation_is_deterministic_per_seed() -> None:
    a = draw_latents((50, 2), 16, seed=3, truncation=0.7)
    assert torch.equal(a, draw_latents((50, 2), 16, seed=3, truncation=0.7))
    assert not torch.equal(a, draw_latents((50, 2), 16, seed=4, truncation=0.7))


@pytest.mark.parametrize("psi", [0.0, -1.0, math.nan, 0.001])
def test_bad_truncation_is_a_value_error(psi: float) -> None:
    with pytest.raises(ValueError, match="truncation must be at least 0.01"):
        draw_latents((2,), 4, seed=0, truncation=psi)


def test_sample_and_interpolate_take_the_flag(model: Path, tmp_path: Path) -> None:  # noqa: F811
    generator = load_model(model, Generator)
    run("sample", "--model", str(model), "--n", "6", "--truncation", "0.5", "--out", str(tmp_path / "t.png"))
    run("sample", "--model", str(model), "--n", "6", "--truncation", "inf", "--out", str(tmp_path / "inf.png"))
    run("sample", "--model", str(model), "--n", "6", "--out", str(tmp_path / "plain.png"))
    truncated = generate(generator, draw_latents((6,), LATENT, 0, truncation=0.5), NORM)
    np.testing.assert_array_equal(read_png(tmp_path / "t.png"), make_grid(truncated, 8, 2, 2))
    np.testing.assert_array_equal(read_png(tmp_path / "inf.png"), read_png(tmp_path / "plain.png"))
    assert not np.array_equal(read_png(tmp_path / "t.png"), read_png(tmp_path / "plain.png"))
    np.testing.assert_array_equal(sample_pixels(generator, 6, 0, NORM, truncation=0.5), truncated)

    args = ("--model", str(model), "--n", "2", "--steps", "4", "--points", "2", "--nrow", "2")
    run("interpolate", *args, "--truncation", "0.5", "--out", str(tmp_path / "w.gif"))
    frames, _, _ = read_gif(tmp_path / "w.gif")
    walk = walk_pixels(generator, 2, 4, 2, 0, NORM, truncation=0.5)
    np.testing.assert_array_equal(frames[0], make_grid(walk[0], 2, 2, 2))
    points = draw_latents((2, 2), LATENT, 0, truncation=0.5)
    start = generate(generator, points[0], NORM)  # the walk starts at its first truncated point
    assert np.abs(walk[0].astype(int) - start.astype(int)).max() <= 1  # another batch: float rounding


@pytest.mark.parametrize("value", ["0", "-0.5", "nan", "x", "0.001"])
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
        f"error: argument --truncation: expected a number >= 0.01, or inf for none, got {value!r}; "
        f"see `wgan {sub} --help`\n"
    )
    assert list(tmp_path.iterdir()) == []
