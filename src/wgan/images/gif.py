"""The grids in ``results/samples/`` -> one animated GIF of training progress.

Grids are grayscale ('L'), which a GIF palette holds exactly, so frames are lossless. With
``optimize=True`` Pillow writes each frame as the changed rectangle only, makes unchanged pixels
transparent when a palette slot is free, and merges identical consecutive frames (adding up their
durations), which keeps ~470 frames of a mostly black background small.

The grid naming lives here, not in ``wgan.images.render``, so this module needs no torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from wgan.config import GifConfig
from wgan.errors import UserError, one_line
from wgan.fileio import atomic_path
from wgan.paths import rerun

RENDER_HINT = rerun("render")
GRID_PREFIX = "grid_"
FINAL_NAME = "final.png"  # the last grid again, for `dvc plots show` and docs/img/; not a frame
GRID_INDEX_DIGITS = 6  # minimum widths of the two numbers in a grid's name
ITER_DIGITS = 7


@dataclass(frozen=True)
class GifSummary:
    """What ``build_gif`` wrote, for the stage's log line."""

    frames: int
    grids: int
    size_bytes: int


def index_width(largest: int, minimum: int) -> int:
    """Digits for zero-padded numbers up to ``largest`` (at least ``minimum``), so lexical order is numeric order."""
    return max(minimum, len(str(largest)))


def grid_name(index: int, iteration: int, count: int, last_iteration: int) -> str:
    """``grid_<index>_it<iteration>.png``, widths fixed per run so lexical order is training order."""
    index_digits, iter_digits = index_width(count - 1, GRID_INDEX_DIGITS), index_width(last_iteration, ITER_DIGITS)
    return f"{GRID_PREFIX}{index:0{index_digits}d}_it{iteration:0{iter_digits}d}.png"


def list_grids(grid_dir: str | os.PathLike[str]) -> list[Path]:
    """The grid files in training order (their names sort that way); ``final.png`` is not one."""
    folder = Path(grid_dir)
    grids = sorted(folder.glob(f"{GRID_PREFIX}*.png")) if folder.is_dir() else []
    if not grids:
        raise UserError(f"no grids ({GRID_PREFIX}*.png) in {folder}; {RENDER_HINT}")
    return grids


def select_frames(count: int, stride: int) -> list[int]:
    """Every ``stride``-th index of ``count``, always ending with the last one."""
    picked = list(range(0, count, stride))
    if picked[-1] != count - 1:
        picked.append(count - 1)
    return picked


def frame_durations(count: int, duration_ms: int, final_hold_ms: int) -> list[int]:
    """``duration_ms`` per frame, ``final_hold_ms`` on the last one."""
    return [duration_ms] * (count - 1) + [final_hold_ms]


def read_grid(path: Path) -> Image.Image:
    """Decode one grid as grayscale; unreadable or truncated files are a ``UserError``."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("L")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise UserError(f"grid {path} cannot be read ({one_line(exc)}); {RENDER_HINT}") from exc


def build_gif(grid_dir: str | os.PathLike[str], out_path: str | os.PathLike[str], cfg: GifConfig) -> GifSummary:
    """Write the animation of the selected grids to ``out_path`` atomically (old file kept on error)."""
    grids = list_grids(grid_dir)
    paths = [grids[i] for i in select_frames(len(grids), cfg.stride)]
    frames = [read_grid(p) for p in paths]
    size = frames[0].size
    for path, frame in zip(paths, frames, strict=True):
        if frame.size != size:
            raise UserError(
                f"grid {path} is {frame.size[0]}x{frame.size[1]} but {paths[0]} is {size[0]}x{size[1]}; "
                f"grids from different runs are mixed, {RENDER_HINT}"
            )
    written = write_gif(frames, frame_durations(len(frames), cfg.duration_ms, cfg.final_hold_ms), cfg.loop, out_path)
    return GifSummary(frames=written, grids=len(frames), size_bytes=Path(out_path).stat().st_size)


def write_gif(frames: list[Image.Image], durations: list[int], loop: int, out_path: str | os.PathLike[str]) -> int:
    """Write grayscale ``frames`` as an animated GIF atomically (old file kept on error); return its frame count.

    ``durations`` are per frame in ms, ``loop`` is the GIF loop count (0 = forever). Pillow merges identical
    consecutive frames (adding up their durations), so the count can be lower than ``len(frames)``.
    """
    with atomic_path(out_path) as tmp:
        frames[0].save(
            tmp, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=loop, optimize=True
        )
    with Image.open(out_path) as written:
        return int(getattr(written, "n_frames", 1))
