"""Fixed-noise snapshots (``models/samples.pt``) -> one PNG grid per snapshot.

The snapshots are stored as uint8 pixels in a fixed range, so grids need no per-grid
normalization (unlike the tutorial's ``save_image(..., normalize=True)``) and brightness stays
comparable from frame to frame of the GIF. Grids are assembled with numpy (the layout is
torchvision's ``make_grid``: ``padding`` black pixels around and between the images), upscaled by
pixel repetition, and only encoded by Pillow.

Grid files are named by ``wgan.gif.grid_name`` (snapshot index first, zero-padded to one width per
run), so ``sorted()`` of the names is training order.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from wgan.config import RenderConfig
from wgan.errors import UserError
from wgan.fileio import torch_load_safe
from wgan.gif import FINAL_NAME, grid_name

SAMPLES_FORMAT = "wgan-samples-v1"
TRAIN_HINT = "rerun `dvc repro train`"
CAPTION_PX = 14  # caption strip height per unit of scale
FONT_PX = 10  # caption font size per unit of scale
PNG_COMPRESS_LEVEL = 3  # ~2x faster than zlib's default 6 for ~14% bigger files


@dataclass(frozen=True)
class Snapshots:
    """The fixed-noise samples of one training run, in training order."""

    images: torch.Tensor  # uint8 [S, N, 1, H, W], 0 = black background
    epoch: torch.Tensor  # int64 [S], 0-based
    iteration: torch.Tensor  # int64 [S], global critic iteration

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass(frozen=True)
class RenderSummary:
    """What ``render_grids`` wrote, for the stage's log line."""

    count: int
    width: int
    height: int
    seconds: float


def load_samples(path: str | os.PathLike[str]) -> Snapshots:
    """Load and check a ``wgan-samples-v1`` file; anything else is a ``UserError``."""
    raw = torch_load_safe(path, "samples", TRAIN_HINT)
    if not isinstance(raw, dict) or raw.get("format") != SAMPLES_FORMAT:
        raise UserError(f"{path} is not a fixed-noise samples file ({SAMPLES_FORMAT}); {TRAIN_HINT}")
    images, epoch, iteration = raw.get("images"), raw.get("epoch"), raw.get("iteration")
    if not (
        isinstance(images, torch.Tensor)
        and images.dtype == torch.uint8
        and images.dim() == 5
        and images.shape[2] == 1
        and isinstance(epoch, torch.Tensor)
        and isinstance(iteration, torch.Tensor)
        and epoch.dtype == iteration.dtype == torch.int64
        and epoch.shape == iteration.shape == (images.shape[0],)
        and bool((epoch >= 0).all())
        and bool((iteration >= 0).all())
    ):
        raise UserError(
            f"{path} is corrupt: expected uint8 images [S, N, 1, H, W] with int64 epoch and iteration >= 0 [S]; "
            f"{TRAIN_HINT}"
        )
    if images.shape[0] == 0 or images.shape[1] == 0 or images.shape[3] == 0 or images.shape[4] == 0:
        raise UserError(
            f"{path} holds no samples (shape {list(images.shape)}); train for at least train.sample_interval "
            f"iterations and {TRAIN_HINT}"
        )
    return Snapshots(images=images, epoch=epoch, iteration=iteration)


def grid_size(
    n_images: int, nrow: int, padding: int, scale: int, caption: bool, image_hw: tuple[int, int] = (28, 28)
) -> tuple[int, int]:
    """(width, height) in pixels of a grid, caption strip included."""
    cols = min(nrow, n_images)
    rows = math.ceil(n_images / cols)
    h, w = image_hw
    width = scale * (cols * (w + padding) + padding)
    height = scale * (rows * (h + padding) + padding + (CAPTION_PX if caption else 0))
    return width, height


def make_grid(images: np.ndarray, nrow: int, padding: int, scale: int) -> np.ndarray:
    """uint8 [N, H, W] -> uint8 grid, ``nrow`` images per row, the whole grid upscaled ``scale`` times.

    At ``scale=1`` this is torchvision's ``make_grid(images, nrow, padding, pad_value=0)`` for N > 1.
    """
    n, h, w = images.shape
    cols = min(nrow, n)
    rows = math.ceil(n / cols)
    cells = np.zeros((rows * cols, h + padding, w + padding), dtype=np.uint8)
    cells[:n, padding:, padding:] = images
    grid = cells.reshape(rows, cols, h + padding, w + padding).transpose(0, 2, 1, 3)
    grid = np.pad(grid.reshape(rows * (h + padding), cols * (w + padding)), ((0, padding), (0, padding)))
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    return grid


def caption_text(epoch: int, iteration: int) -> str:
    """The caption under a grid (epoch as stored: 0-based, like the tutorial's log)."""
    return f"epoch {epoch}  iter {iteration}"


def render_grids(
    samples_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], cfg: RenderConfig
) -> RenderSummary:
    """Write one grid per snapshot plus ``final.png`` into ``out_dir``, replacing its old content."""
    start = time.perf_counter()
    snaps = load_samples(samples_path)
    available = int(snaps.images.shape[1])
    if cfg.n_images > available:
        raise UserError(
            f"render.n_images = {cfg.n_images} is more than the {available} fixed samples per snapshot in "
            f"{samples_path}; lower render.n_images or raise train.n_fixed and {TRAIN_HINT}"
        )
    # The same first n_images of the fixed batch in every grid, so frames show the same latents.
    images = snaps.images[:, : cfg.n_images, 0].numpy()
    epochs, iterations = snaps.epoch.tolist(), snaps.iteration.tolist()
    count = len(snaps)
    font = ImageFont.load_default(size=FONT_PX * cfg.scale) if cfg.caption else None
    last_iteration = max(iterations)
    width = height = 0
    last_path: Path | None = None
    with replaced_dir(out_dir) as tmp:
        for i in range(count):
            grid = make_grid(images[i], cfg.nrow, cfg.padding, cfg.scale)
            if font is not None:
                grid = _add_caption(grid, caption_text(epochs[i], iterations[i]), font, cfg.scale)
            height, width = grid.shape
            last_path = tmp / grid_name(i, iterations[i], count, last_iteration)
            Image.fromarray(grid).save(last_path, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
        assert last_path is not None  # load_samples guarantees at least one snapshot
        shutil.copyfile(last_path, tmp / FINAL_NAME)
    return RenderSummary(count=count, width=width, height=height, seconds=time.perf_counter() - start)


def _add_caption(grid: np.ndarray, text: str, font: ImageFont.FreeTypeFont, scale: int) -> np.ndarray:
    """Append a black strip under ``grid`` with ``text`` in white, left-aligned (clipped if the grid is narrower)."""
    strip = CAPTION_PX * scale
    frame = np.zeros((grid.shape[0] + strip, grid.shape[1]), dtype=np.uint8)
    frame[: grid.shape[0]] = grid
    image = Image.fromarray(frame)
    ImageDraw.Draw(image).text((2 * scale, grid.shape[0] + strip / 2), text, fill=255, font=font, anchor="lm")
    return np.asarray(image)


@contextlib.contextmanager
def replaced_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temp folder beside ``path``; swap it in for ``path`` only if the block succeeds.

    Old content (stale grids of a longer run) disappears with the old folder. The swap is two
    renames in the same parent, so readers see either the old or the new folder, never a mix.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; give it a normal folder's permissions
    except OSError as exc:
        raise UserError(f"cannot write {target}: {exc.strerror or exc}; make its folder writable") from exc
    old = tmp.with_name(tmp.name + ".old")
    moved = False
    try:
        yield tmp
        if target.exists() or target.is_symlink():
            os.replace(target, old)
            moved = True
        os.replace(tmp, target)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if moved:
            with contextlib.suppress(OSError):
                os.replace(old, target)
        if isinstance(exc, OSError):
            raise UserError(
                f"cannot write {target}: {exc.strerror or exc}; make its folder writable or free some space"
            ) from exc
        raise
    if moved:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
