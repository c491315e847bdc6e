"""The render stage: fixed-noise snapshots -> PNG grids with an exact, predictable layout."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_stage_script
from PIL import Image

from wgan.config import RenderConfig
from wgan.data.samples import SAMPLES_FORMAT, load_samples
from wgan.errors import UserError
from wgan.fileio import replaced_dir
from wgan.images.gif import FINAL_NAME, grid_name
from wgan.images.render import grid_size, make_grid, render_grids


def write_samples(
    path: Path, snapshots: int = 3, n_fixed: int = 30, iterations: list[int] | None = None, seed: int = 0
) -> torch.Tensor:
    """Write a ``wgan-samples-v1`` file of random uint8 images, as the train stage does; return the images."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (snapshots, n_fixed, 1, 28, 28), generator=g, dtype=torch.uint8)
    its = torch.tensor(iterations if iterations is not None else [400 * i for i in range(snapshots)])
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": SAMPLES_FORMAT, "images": images, "epoch": its // 1000, "iteration": its}, path)
    return images


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "L"
        return np.asarray(image)


def grids_in(folder: Path) -> list[Path]:
    return sorted(folder.glob("grid_*.png"))


def run_stage(cwd: Path, render: str) -> subprocess.CompletedProcess[str]:
    (cwd / "params.yaml").write_text(f"render:\n{render}")
    return run_stage_script("render", cwd, timeout=120)


@pytest.mark.parametrize(("caption", "height"), [(False, 304), (True, 332)])
def test_grid_has_the_formula_size(tmp_path: Path, caption: bool, height: int) -> None:
    write_samples(tmp_path / "samples.pt")
    cfg = RenderConfig(nrow=5, n_images=25, padding=2, scale=2, caption=caption)
    summary = render_grids(tmp_path / "samples.pt", tmp_path / "out", cfg)
    # width = scale * (nrow * (28 + padding) + padding); the caption strip adds 14 * scale rows
    assert (summary.width, summary.height) == (304, height) == grid_size(25, 5, 2, 2, caption)
    for path in [*grids_in(tmp_path / "out"), tmp_path / "out" / FINAL_NAME]:
        assert read_png(path).shape == (height, 304)


def test_partial_last_row_and_few_images() -> None:
    images = np.ones((10, 28, 28), dtype=np.uint8)
    assert make_grid(images, nrow=4, padding=1, scale=1).shape == (3 * 29 + 1, 4 * 29 + 1)
    assert grid_size(10, 4, 1, 1, False) == (117, 88)
    # fewer images than nrow: the row is only as wide as the images
    assert make_grid(images[:3], nrow=8, padding=0, scale=3).shape == (84, 252) == grid_size(3, 8, 0, 3, False)[::-1]


@pytest.mark.parametrize(("n", "nrow", "padding"), [(2, 5, 2), (10, 4, 1), (25, 5, 2), (64, 8, 0), (7, 3, 3)])
def test_the_layout_is_torchvisions(n: int, nrow: int, padding: int) -> None:
    """make_grid is written out to spare each process torchvision's import; its pixels stay torchvision's."""
    import torchvision  # only here: the project's code no longer imports it to draw

    images = torch.randint(1, 256, (n, 28, 28), generator=torch.Generator().manual_seed(n), dtype=torch.uint8)
    want = torchvision.utils.make_grid(images[:, None], nrow=nrow, padding=padding, pad_value=0)[0].numpy()
    np.testing.assert_array_equal(make_grid(images.numpy(), nrow, padding, 1), want)
    np.testing.assert_array_equal(make_grid(images.numpy(), nrow, padding, 2), want.repeat(2, 0).repeat(2, 1))


def test_a_single_image_gets_the_border_of_a_grid() -> None:
    """torchvision's make_grid returns a lone image unpadded; a grid of one must look like any other grid."""
    images = torch.randint(1, 256, (2, 28, 28), generator=torch.Generator().manual_seed(1), dtype=torch.uint8).numpy()
    one = make_grid(images[:1], nrow=5, padding=2, scale=3)
    two = make_grid(images, nrow=1, padding=2, scale=3)
    assert one.shape == (96, 96) == grid_size(1, 5, 2, 3, False)
    np.testing.assert_array_equal(one, two[:96])  # the first cell of a one-column grid, border included


def test_cells_hold_the_upscaled_samples_of_the_same_latents(tmp_path: Path) -> None:
    images = write_samples(tmp_path / "samples.pt", snapshots=2, n_fixed=12).numpy()
    render_grids(tmp_path / "samples.pt", tmp_path / "out", RenderConfig(nrow=3, n_images=7, padding=2, scale=2))
    scale, pad = 2, 2
    for s, path in enumerate(grids_in(tmp_path / "out")):
        grid = read_png(path)
        for index, (row, col) in [(0, (0, 0)), (4, (1, 1)), (6, (2, 0))]:
            y, x = scale * (pad + row * (28 + pad)), scale * (pad + col * (28 + pad))
            expected = np.kron(images[s, index, 0], np.ones((scale, scale), dtype=np.uint8))
            np.testing.assert_array_equal(grid[y : y + 56, x : x + 56], expected)
        # cells 7 and 8 of the last row stay empty (only the first n_images are drawn)
        y, x = scale * (pad + 2 * (28 + pad)), scale * (pad + 1 * (28 + pad))
        assert grid[y : y + 56, x:].max() == 0


def test_names_sort_in_training_order_and_final_is_last(tmp_path: Path) -> None:
    iterations = [0, 5, 9, 40, 100, 400, 800, 1200, 5000, 9999, 10000, 123456]
    write_samples(tmp_path / "samples.pt", snapshots=len(iterations), iterations=iterations)
    render_grids(tmp_path / "samples.pt", tmp_path / "out", RenderConfig())
    names = [p.name for p in (tmp_path / "out").iterdir() if p.name != FINAL_NAME]
    assert len(names) == len(iterations)
    ordered = sorted(names)
    assert [int(n.split("_it")[1].removesuffix(".png")) for n in ordered] == iterations
    assert ordered[0] == "grid_000000_it0000000.png"
    # widths grow for very long runs but stay the same within a run
    assert grid_name(5, 400, count=10**7, last_iteration=10**8) == "grid_0000005_it000000400.png"
    np.testing.assert_array_equal(read_png(tmp_path / "out" / FINAL_NAME), read_png(tmp_path / "out" / ordered[-1]))
    assert not np.array_equal(read_png(tmp_path / "out" / ordered[0]), read_png(tmp_path / "out" / ordered[-1]))


def test_caption_strip_has_text_only_when_asked(tmp_path: Path) -> None:
    write_samples(tmp_path / "samples.pt", snapshots=1)
    for caption in (True, False):
        out = tmp_path / f"out_{caption}"
        render_grids(tmp_path / "samples.pt", out, RenderConfig(padding=2, scale=2, caption=caption))
        grid = read_png(grids_in(out)[0])
        strip = grid[304:]
        assert strip.shape[0] == (28 if caption else 0)
        if caption:
            assert strip.max() == 255 and (strip > 0).mean() < 0.5  # white text on black


def test_stale_grids_are_removed(tmp_path: Path) -> None:
    out = tmp_path / "results" / "samples"
    write_samples(tmp_path / "samples.pt", snapshots=5)
    render_grids(tmp_path / "samples.pt", out, RenderConfig())
    (out / "notes.txt").write_text("stale")
    write_samples(tmp_path / "samples.pt", snapshots=2)
    render_grids(tmp_path / "samples.pt", out, RenderConfig())
    assert sorted(p.name for p in out.iterdir()) == [
        "final.png",
        "grid_000000_it0000000.png",
        "grid_000001_it0000400.png",
    ]
    assert sorted(p.name for p in out.parent.iterdir()) == ["samples"]  # no temp folders left behind


def test_replaced_dir_keeps_old_content_on_error(tmp_path: Path) -> None:
    target = tmp_path / "samples"
    target.mkdir()
    (target / "keep.png").write_bytes(b"old")
    with pytest.raises(RuntimeError), replaced_dir(target) as tmp:
        (tmp / "new.png").write_bytes(b"new")
        raise RuntimeError("boom")
    assert [p.name for p in tmp_path.iterdir()] == ["samples"]
    assert (target / "keep.png").read_bytes() == b"old"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"format": "wgan-prepared-v1"}, "is not a fixed-noise samples file"),
        ([1, 2, 3], "is not a fixed-noise samples file"),
        (
            {
                "format": SAMPLES_FORMAT,
                "images": torch.zeros(2, 4, 1, 28, 28),  # float, not uint8
                "epoch": torch.zeros(2, dtype=torch.int64),
                "iteration": torch.zeros(2, dtype=torch.int64),
            },
            "is corrupt",
        ),
        (
            {
                "format": SAMPLES_FORMAT,
                "images": torch.zeros(2, 4, 1, 28, 28, dtype=torch.uint8),
                "epoch": torch.zeros(3, dtype=torch.int64),  # one per snapshot expected
                "iteration": torch.zeros(2, dtype=torch.int64),
            },
            "is corrupt",
        ),
        (
            {
                "format": SAMPLES_FORMAT,
                "images": torch.zeros(0, 4, 1, 28, 28, dtype=torch.uint8),
                "epoch": torch.zeros(0, dtype=torch.int64),
                "iteration": torch.zeros(0, dtype=torch.int64),
            },
            "holds no samples",
        ),
    ],
)
def test_foreign_or_corrupt_samples_are_user_errors(tmp_path: Path, payload: object, message: str) -> None:
    torch.save(payload, tmp_path / "samples.pt")
    with pytest.raises(UserError, match=message) as info:
        load_samples(tmp_path / "samples.pt")
    assert "rerun `dvc repro train`" in str(info.value)


@pytest.mark.slow
def test_stage_renders_from_params(tmp_path: Path) -> None:
    write_samples(tmp_path / "models" / "samples.pt", snapshots=4, n_fixed=16)
    done = run_stage(tmp_path, "  nrow: 4\n  n_images: 16\n  padding: 1\n  scale: 1\n  caption: false\n")
    assert done.returncode == 0, done.stderr
    assert "render: 4 grids of 117x117 px in results/samples" in done.stdout
    grids = grids_in(tmp_path / "results" / "samples")
    assert len(grids) == 4 and read_png(grids[0]).shape == (117, 117)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("too_many", "error: render.n_images = 30 is more than the 25 fixed samples per snapshot in models/samples.pt"),
        ("garbage", "error: samples file models/samples.pt cannot be loaded"),
    ],
)
def test_stage_errors_are_one_line_exit_2(tmp_path: Path, setup: str, expected: str) -> None:
    out = tmp_path / "results" / "samples"
    out.mkdir(parents=True)
    (out / "grid_000000_it0000000.png").write_bytes(b"previous run")
    samples = tmp_path / "models" / "samples.pt"
    if setup == "too_many":
        write_samples(samples, n_fixed=25)
    elif setup == "garbage":
        samples.parent.mkdir()
        samples.write_bytes(b"\x00not a torch file")
    done = run_stage(tmp_path, "  n_images: 30\n" if setup == "too_many" else "  n_images: 25\n")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(expected), done.stderr
    if setup == "too_many":
        assert "train.n_fixed" in done.stderr
    assert [p.name for p in out.iterdir()] == ["grid_000000_it0000000.png"]  # previous output untouched


def test_conditional_grids_have_one_labelled_row_per_digit(tmp_path: Path) -> None:
    """A conditional run's samples (4 latents x 10 digits): a row per digit, the first nrow latents, digit labels."""
    images = write_samples(tmp_path / "samples.pt", snapshots=2, n_fixed=40).numpy()
    raw = torch.load(tmp_path / "samples.pt", weights_only=True)
    torch.save({**raw, "labels": torch.arange(10).repeat_interleave(4)}, tmp_path / "samples.pt")
    assert load_samples(tmp_path / "samples.pt").labels is not None
    scale, pad, strip = 2, 2, 28  # the digit strip on the left is as wide as the caption strip is high
    cfg = RenderConfig(nrow=3, n_images=25, padding=pad, scale=scale, caption=True)
    render_grids(tmp_path / "samples.pt", tmp_path / "out", cfg)
    for s, path in enumerate(grids_in(tmp_path / "out")):
        grid = read_png(path)
        width, height = grid_size(30, 3, pad, scale, True)
        assert grid.shape == (height, width + strip)
        for digit, col in [(0, 0), (3, 2), (9, 1)]:
            y, x = scale * (pad + digit * (28 + pad)), strip + scale * (pad + col * (28 + pad))
            expected = np.kron(images[s, 4 * digit + col, 0], np.ones((scale, scale), dtype=np.uint8))
            np.testing.assert_array_equal(grid[y : y + 56, x : x + 56], expected)
            assert grid[y : y + 56, :strip].max() == 255  # the row's digit, white on black
    with pytest.raises(UserError, match=r"render.nrow = 5 is more than the 4 fixed samples of each digit"):
        render_grids(tmp_path / "samples.pt", tmp_path / "out", RenderConfig(nrow=5))
    torch.save({**raw, "labels": torch.zeros(3, dtype=torch.int64)}, tmp_path / "samples.pt")
    with pytest.raises(UserError, match=r"expected int64 labels \[N\], one per fixed sample"):
        load_samples(tmp_path / "samples.pt")
