"""`wgan sample` and `wgan interpolate`: images of the trained generator, deterministic per seed; the
latent_walk stage; one-line errors with exit code 2.

A small untrained generator (saved as the train stage saves one) keeps each test to seconds: what is tested
is which latents reach which pixels, not image quality. Most checks call `wgan.commands.main.main` in-process; a
few run the real console script as a user would.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import BIN, REPO, run_wgan, stage_env
from test_gif import read_gif
from test_render import read_png

from wgan.commands.main import main
from wgan.data.model_file import load_model, load_model_and_norm, save_model
from wgan.errors import UserError
from wgan.images.generate import generate, sample_pixels, walk_pixels
from wgan.images.latent import keyframes
from wgan.images.render import make_grid
from wgan.models.conditional import ConditionalGenerator
from wgan.models.networks import Critic, Generator
from wgan.models.sampling import draw_latents

LATENT = 16
NORM = (0.5, 0.5)  # the normalization the saved generators record: the default params'


def _saved_generator(tmp_path_factory: pytest.TempPathFactory, cls: type) -> Path:
    """A small untrained generator of class ``cls``, saved as the train stage saves one."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "generator.pt"
    save_model(cls(latent_dim=LATENT, hidden=(32, 64)), path, NORM)
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _saved_generator(tmp_path_factory, Generator)


def wgan(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real `wgan` command, run in ``cwd`` with this checkout's code."""
    return run_wgan(*args, cwd=cwd)


def run(*args: str) -> None:
    """`wgan ARGS` in-process (the same parser and error wrapper as the console script)."""
    main(list(args))


def test_the_console_script_is_declared_and_installed() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"wgan": "wgan.commands.main:main"}
    installed = importlib.metadata.entry_points(group="console_scripts", name="wgan")
    if not installed:
        pytest.skip("this environment was installed before `wgan` existed; `make test` reinstalls it")
    assert (BIN / "wgan").is_file()  # so the tests below run the real script


@pytest.mark.slow
def test_sample_grid_and_one_png_each(model: Path, tmp_path: Path) -> None:
    done = wgan(
        "sample", "--model", str(model), "--n", "10", "--nrow", "4", "--scale", "3", "--out", "d.png", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    grid = read_png(tmp_path / "d.png")
    assert grid.shape == (3 * (3 * 30 + 2), 3 * (4 * 30 + 2))  # 10 images: 3 rows of 4, 28 px + 2 px padding
    pixels = sample_pixels(load_model(model, Generator), 10, 0, NORM)
    np.testing.assert_array_equal(grid, make_grid(pixels, 4, 2, 3))  # the render stage's grid code

    done = wgan("sample", "--model", str(model), "--n", "10", "--out", "each/", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    files = sorted((tmp_path / "each").iterdir())
    assert [f.name for f in files] == [f"sample_{i:04d}.png" for i in range(10)]
    for i, path in enumerate(files):
        image = read_png(path)
        assert image.shape == (56, 56)  # 28 px at the default --scale 2
        np.testing.assert_array_equal(image[::2, ::2], pixels[i])


def test_sample_is_deterministic_per_seed(model: Path, tmp_path: Path) -> None:
    for name, seed in (("a.png", "3"), ("b.png", "3"), ("c.png", "4")):
        run("sample", "--model", str(model), "--n", "6", "--seed", seed, "--out", str(tmp_path / name))
    a, b, c = (read_png(tmp_path / n) for n in ("a.png", "b.png", "c.png"))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_the_generator_runs_in_eval_mode(model: Path, tmp_path: Path) -> None:
    generator = load_model(model, Generator).train()  # a caller's train mode must not leak into the images
    batch = sample_pixels(generator, 6, 0, (0.5, 0.5))
    single = np.concatenate([generate(generator, z[None], (0.5, 0.5)) for z in draw_latents((6,), LATENT, 0)])
    np.testing.assert_array_equal(batch, single)  # BatchNorm in train mode would mix the batch


@pytest.mark.slow
def test_interpolate_gif_frames_loop_and_points(model: Path, tmp_path: Path) -> None:
    args = ("--model", str(model), "--n", "3", "--steps", "12", "--points", "3", "--seed", "7", "--nrow", "3")
    done = wgan("interpolate", *args, "--duration-ms", "60", "--out", "w.gif", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    frames, durations, loop = read_gif(tmp_path / "w.gif")
    assert len(frames) == 12 and durations == [60] * 12 and loop == 0
    assert frames[0].shape == (2 * (30 + 2), 2 * (3 * 30 + 2))

    walk = walk_pixels(load_model(model, Generator), 3, 12, 3, 7, NORM)
    for frame, pixels in zip(frames, walk, strict=True):
        np.testing.assert_array_equal(frame, make_grid(pixels, 3, 2, 2))  # lossless, the render grid layout
    # each row passes through the generator's images of its own sampled points, in lockstep
    points = draw_latents((3, 3), LATENT, 7)
    for k, frame in enumerate(keyframes(12, 3)):
        expected = generate(load_model(model, Generator), points[k], NORM)
        assert np.abs(walk[frame].astype(int) - expected.astype(int)).max() <= 1  # other batch: float rounding


@pytest.mark.slow
def test_latent_walk_stage_writes_the_gif(model: Path, tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    save_model(load_model(model, Generator), tmp_path / "models" / "generator.pt", OTHER_NORM)
    params = "prepare: {mean: 0.5, std: 0.5}\nlatent_walk: {n: 4, steps: 8, points: 2, nrow: 2, scale: 1, seed: 1}\n"
    (tmp_path / "params.yaml").write_text(params)
    done = subprocess.run(
        [sys.executable, str(REPO / "stages" / "latent_walk.py")],
        cwd=tmp_path,
        env=stage_env(REPO),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "latent_walk: results/latent_walk.gif with 8 frames of 4 walks" in done.stdout
    frames, durations, _ = read_gif(tmp_path / "results" / "latent_walk.gif")
    walk = walk_pixels(load_model(model, Generator), 4, 8, 2, 1, OTHER_NORM)  # the file's, not params.yaml's
    assert durations == [80] * 8 and done.stderr == ""
    np.testing.assert_array_equal(frames[5], make_grid(walk[5], 2, 2, 1))


# --- the normalization a model file records ------------------------------------------------------------------------

OTHER_NORM = (0.25, 0.75)  # a valid normalization other than params.yaml's 0.5/0.5: a generator trained with it


def _small_generator() -> Generator:
    torch.manual_seed(0)
    return Generator(latent_dim=LATENT, hidden=(32, 64))


def _old_format(generator: Generator, path: Path) -> None:
    """A generator file as written before model files recorded the normalization: kind, kwargs and weights."""
    torch.save({"kind": "generator", "kwargs": generator.init_kwargs(), "state_dict": generator.state_dict()}, path)


def test_a_generator_file_records_its_normalization(tmp_path: Path) -> None:
    save_model(_small_generator(), tmp_path / "g.pt", OTHER_NORM)
    generator, norm = load_model_and_norm(tmp_path / "g.pt", Generator)
    assert isinstance(generator, Generator) and norm == OTHER_NORM
    save_model(Critic(hidden=(8,)), tmp_path / "c.pt")
    assert load_model_and_norm(tmp_path / "c.pt", Critic)[1] is None  # a model whose output is not pixels: none
    _old_format(_small_generator(), tmp_path / "old.pt")
    assert load_model_and_norm(tmp_path / "old.pt", Generator)[1] is None
    for damaged in ({"mean": 0.5, "std": 0.0}, {"mean": float("nan"), "std": 0.5}, {"mean": 0.5}, [0.5, 0.5]):
        raw = torch.load(tmp_path / "g.pt", weights_only=True)
        torch.save({**raw, "norm": damaged}, tmp_path / "bad.pt")
        with pytest.raises(UserError, match=r"bad.pt does not hold a valid generator \(its pixel normalization"):
            load_model(tmp_path / "bad.pt", Generator)


def test_sample_and_interpolate_map_pixels_with_the_files_normalization(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Not with params.yaml's: the file records the normalization its generator was trained with."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("prepare: {mean: 0.5, std: 0.5}\n")
    generator = _small_generator()
    save_model(generator, tmp_path / "g.pt", OTHER_NORM)
    run("sample", "--model", "g.pt", "--n", "6", "--out", "s.png")
    run("interpolate", "--model", "g.pt", "--n", "2", "--steps", "4", "--points", "2", "--nrow", "2", "--out", "w.gif")
    assert capsys.readouterr().err == ""
    z = draw_latents((6,), LATENT, 0)
    grid = read_png(tmp_path / "s.png")
    np.testing.assert_array_equal(grid, make_grid(generate(generator, z, OTHER_NORM), 8, 2, 2))
    assert not np.array_equal(grid, make_grid(generate(generator, z, (0.5, 0.5)), 8, 2, 2))
    frames, _, _ = read_gif(tmp_path / "w.gif")
    np.testing.assert_array_equal(frames[0], make_grid(walk_pixels(generator, 2, 4, 2, 0, OTHER_NORM)[0], 2, 2, 2))


def test_a_generator_file_from_before_loads_with_params_normalization_and_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    generator = _small_generator()
    _old_format(generator, tmp_path / "old.pt")
    z = draw_latents((6,), LATENT, 0)
    for params, norm, source in (("prepare: {mean: 0.5, std: 1.0}\n", (0.5, 1.0), "params.yaml"), (None, NORM, "")):
        if params:
            (tmp_path / "params.yaml").write_text(params)
        else:
            (tmp_path / "params.yaml").unlink()
            source = "the defaults"  # no params.yaml: what `wgan sample` used before, too
        run("sample", "--model", "old.pt", "--n", "6", "--out", "s.png")
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("note: old.pt does not record the normalization"), err
        assert err.endswith(f"prepare.mean {norm[0]:g}, prepare.std {norm[1]:g} from {source}\n"), err
        np.testing.assert_array_equal(read_png(tmp_path / "s.png"), make_grid(generate(generator, z, norm), 8, 2, 2))


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["sample", "--n", "0"], "argument --n: expected an integer >= 1, got '0'; see `wgan sample --help`"),
        (["sample", "--model", "missing.pt"], "generator file missing.pt is missing; pass --model PATH"),
        (["sample", "--model", "{critic}"], "is not a saved generator; pass --model PATH"),
        (["sample", "--model", "{junk}"], "cannot be loaded"),
        (["sample", "--out", "blocker/d.png"], "cannot write blocker/d.png"),
        (["sample", "--out", "blocker/dir/"], "cannot write blocker/dir/sample_0000.png"),
        (["sample", "--out", "d.jpg"], "--out d.jpg must end in .png"),
        (["interpolate", "--out", "w.png"], "--out w.png must end in .gif"),
        (["interpolate", "--steps", "3", "--points", "4"], "--points 4 is more than --steps 3"),
        (["interpolate", "--steps", "x"], "argument --steps: expected an integer >= 2, got 'x'"),
        (["interpolate", "--out", "blocker/w.gif"], "cannot write blocker/w.gif"),
        (["smaple"], "invalid choice: 'smaple'"),
        ([], "the following arguments are required"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    args: list[str], expect: str, model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WGAN_DEBUG", raising=False)
    save_model(Critic(hidden=(8,)), tmp_path / "critic.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    (tmp_path / "blocker").write_bytes(b"a file where a folder should be")  # root ignores permission bits
    args = [a.format(critic=tmp_path / "critic.pt", junk=tmp_path / "junk.pt") for a in args]
    if "--model" not in args and args and args[0] != "smaple":
        args += ["--model", str(model)]
    with pytest.raises(SystemExit) as exit_info:
        run(*args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and expect in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "critic.pt", "junk.pt"]  # nothing written


@pytest.mark.slow
def test_the_script_reports_bad_input_in_one_line(tmp_path: Path) -> None:
    done = wgan("sample", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == (
        "error: generator file models/generator.pt is missing; pass --model PATH, or train one with `dvc repro train`\n"
    )


def test_help_of_every_subcommand(capsys) -> None:
    for sub in ("sample", "interpolate", "compare", "plots"):
        with pytest.raises(SystemExit) as exit_info:
            run(sub, "--help")
        assert exit_info.value.code == 0
        assert f"usage: wgan {sub}" in capsys.readouterr().out


@pytest.fixture(scope="module")
def conditional_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _saved_generator(tmp_path_factory, ConditionalGenerator)


def test_sample_digit_draws_that_digit_from_a_conditional_generator(conditional_model: Path, tmp_path: Path) -> None:
    """--digit D: the same latents with label D; without it, a conditional generator draws 0, 1, ..., 9 in turn."""
    generator = load_model(conditional_model, ConditionalGenerator)
    z, norm = draw_latents((12,), LATENT, 0), NORM
    for digit in ("3", "8"):
        out = str(tmp_path / f"{digit}.png")
        run("sample", "--model", str(conditional_model), "--n", "12", "--digit", digit, "--nrow", "12", "--out", out)
        expected = generate(generator, z, norm, torch.full((12,), int(digit)))
        np.testing.assert_array_equal(read_png(tmp_path / f"{digit}.png"), make_grid(expected, 12, 2, 2))
    assert not np.array_equal(read_png(tmp_path / "3.png"), read_png(tmp_path / "8.png"))  # the label matters
    run("sample", "--model", str(conditional_model), "--n", "12", "--nrow", "12", "--out", str(tmp_path / "all.png"))
    cycled = generate(generator, z, norm, torch.arange(12) % 10)
    np.testing.assert_array_equal(read_png(tmp_path / "all.png"), make_grid(cycled, 12, 2, 2))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("which", "digit", "message"),
    [
        ("unconditional", "3", "error: --digit needs a conditional generator"),
        ("conditional", "10", "error: --digit 10 is not a digit of this generator (0 to 9)"),
    ],
)
def test_a_digit_the_generator_cannot_draw_is_one_line(
    model: Path, conditional_model: Path, tmp_path: Path, which: str, digit: str, message: str
) -> None:
    path = conditional_model if which == "conditional" else model
    done = wgan("sample", "--model", str(path), "--digit", digit, "--out", "x.png", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and done.stderr.startswith(message), done.stderr
    assert not (tmp_path / "x.png").exists()
