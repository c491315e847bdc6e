"""The gif stage: grids -> an animated GIF with the requested frames, timing and loop, losslessly."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import run_stage_script
from PIL import Image

from wgan.config import GifConfig
from wgan.errors import UserError
from wgan.images.gif import FINAL_NAME, build_gif, frame_durations, grid_name, select_frames


def write_grids(folder: Path, count: int, shape: tuple[int, int] = (40, 30), seed: int = 0) -> list[np.ndarray]:
    """Write ``count`` distinct grayscale grids named as the render stage names them, plus a final.png."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    grids = []
    for i in range(count):
        grid = np.zeros(shape, dtype=np.uint8)
        grid[2:-2, 2:-2] = rng.integers(0, 256, (shape[0] - 4, shape[1] - 4), dtype=np.uint8)
        Image.fromarray(grid).save(folder / grid_name(i, 400 * i, count, 400 * (count - 1)))
        grids.append(grid)
    Image.new("L", (7, 7), 255).save(folder / FINAL_NAME)  # another size: must not be a frame
    return grids


def read_gif(path: Path) -> tuple[list[np.ndarray], list[int], int | None]:
    """Decoded frames (grayscale), per-frame durations and the loop count of a GIF."""
    frames, durations = [], []
    with Image.open(path) as gif:
        loop = gif.info.get("loop")
        for i in range(gif.n_frames):
            gif.seek(i)
            durations.append(gif.info["duration"])
            frames.append(np.asarray(gif.convert("L")))
    return frames, durations, loop


def run_stage(cwd: Path, gif: str = "  duration_ms: 50\n") -> subprocess.CompletedProcess[str]:
    (cwd / "params.yaml").write_text(f"gif:\n{gif}")
    return run_stage_script("gif", cwd, timeout=120)


@pytest.mark.parametrize(
    ("count", "stride", "picked"),
    [(1, 1, [0]), (5, 1, [0, 1, 2, 3, 4]), (7, 3, [0, 3, 6]), (8, 3, [0, 3, 6, 7]), (3, 10, [0, 2])],
)
def test_stride_keeps_every_kth_and_the_last(count: int, stride: int, picked: list[int]) -> None:
    assert select_frames(count, stride) == picked


def test_durations_hold_the_last_frame() -> None:
    assert frame_durations(4, 80, 1500) == [80, 80, 80, 1500]
    assert frame_durations(1, 80, 1500) == [1500]


@pytest.mark.parametrize(("count", "stride", "loop"), [(8, 3, 0), (5, 1, 3)])
def test_gif_frames_timing_loop_and_pixels(tmp_path: Path, count: int, stride: int, loop: int) -> None:
    grids = write_grids(tmp_path / "samples", count)
    cfg = GifConfig(duration_ms=70, loop=loop, stride=stride, final_hold_ms=1500)
    summary = build_gif(tmp_path / "samples", tmp_path / "out.gif", cfg)
    frames, durations, read_loop = read_gif(tmp_path / "out.gif")
    picked = select_frames(count, stride)
    assert summary.frames == summary.grids == len(frames) == len(picked)
    assert durations == [70] * (len(picked) - 1) + [1500]
    assert read_loop == loop
    for frame, index in zip(frames, picked, strict=True):
        np.testing.assert_array_equal(frame, grids[index])  # lossless for grayscale
    assert summary.size_bytes == (tmp_path / "out.gif").stat().st_size


def test_single_grid_gives_a_one_frame_gif(tmp_path: Path) -> None:
    grids = write_grids(tmp_path / "samples", 1)
    build_gif(tmp_path / "samples", tmp_path / "out.gif", GifConfig(final_hold_ms=900))
    frames, durations, _ = read_gif(tmp_path / "out.gif")
    assert durations == [900]
    np.testing.assert_array_equal(frames[0], grids[0])


def test_grids_of_different_sizes_are_a_user_error(tmp_path: Path) -> None:
    write_grids(tmp_path / "samples", 3)
    Image.new("L", (10, 10)).save(tmp_path / "samples" / "grid_000003_it0001200.png")
    with pytest.raises(UserError, match=r"grid_000003_it0001200.png is 10x10 but .* is 30x40"):
        build_gif(tmp_path / "samples", tmp_path / "out.gif", GifConfig())
    assert not (tmp_path / "out.gif").exists()


@pytest.mark.slow
def test_stage_writes_the_gif(tmp_path: Path) -> None:
    grids = write_grids(tmp_path / "results" / "samples", 4)
    done = run_stage(tmp_path, "  duration_ms: 50\n  stride: 2\n  final_hold_ms: 700\n")
    assert done.returncode == 0, done.stderr
    assert "gif: results/wgan.gif with 3 frames from 3 grids" in done.stdout
    frames, durations, loop = read_gif(tmp_path / "results" / "wgan.gif")
    assert durations == [50, 50, 700] and loop == 0
    np.testing.assert_array_equal(frames[-1], grids[-1])


@pytest.mark.slow
@pytest.mark.parametrize("problem", ["no_grids", "corrupt_grid"])
def test_stage_errors_are_one_line_and_keep_the_old_gif(tmp_path: Path, problem: str) -> None:
    folder = tmp_path / "results" / "samples"
    old_gif = tmp_path / "results" / "wgan.gif"
    if problem == "no_grids":
        folder.mkdir(parents=True)
        Image.new("L", (7, 7)).save(folder / FINAL_NAME)  # final.png alone is not a grid
        expected = "error: no grids (grid_*.png) in results/samples; rerun `dvc repro render`"
    else:
        write_grids(folder, 3)
        last = folder / "grid_000002_it0000800.png"  # the last grid is a frame whatever gif.stride is
        last.write_bytes(last.read_bytes()[: len(last.read_bytes()) // 2])  # truncated
        expected = "error: grid results/samples/grid_000002_it0000800.png cannot be read ("
    old_gif.write_bytes(b"GIF89a previous")
    done = run_stage(tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(expected), done.stderr
    assert done.stderr.rstrip().endswith("rerun `dvc repro render`")
    assert old_gif.read_bytes() == b"GIF89a previous"
    assert sorted(p.name for p in old_gif.parent.iterdir()) == ["samples", "wgan.gif"]
