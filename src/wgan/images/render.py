"""Fixed-noise snapshots (``models/samples.pt``) -> one PNG grid per snapshot.

The snapshots are stored as uint8 pixels in a fixed range, so grids need no per-grid
normalization (unlike the tutorial's ``save_image(..., normalize=True)``) and brightness stays
comparable from frame to frame of the GIF. Grids are laid out like torchvision's ``make_grid``
(``padding`` black pixels around and between the images), upscaled by pixel repetition, and
encoded by Pillow.

Grid files are named by ``wgan.images.gif.grid_name`` (snapshot index first, zero-padded to one width per
run), so ``sorted()`` of the names is training order.

A conditional run's grids (its samples file records a digit per image) have one row per digit, top to
bottom, each the first ``render.nrow`` latents (the same in every row); with a caption, each row is labelled
with its digit in a strip on the left.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from wgan.config import RenderConfig
from wgan.data.samples import Samples, load_samples
from wgan.errors import UserError
from wgan.fileio import replaced_dir
from wgan.images.gif import FINAL_NAME, grid_name
from wgan.paths import rerun

CAPTION_PX = 14  # caption strip height per unit of scale
FONT_PX = 10  # caption font size per unit of scale
PNG_COMPRESS_LEVEL = 3  # ~2x faster than zlib's default 6 for ~14% bigger files


@dataclass(frozen=True)
class RenderSummary:
    """What ``render_grids`` wrote, for the stage's log line."""

    count: int
    width: int
    height: int
    seconds: float


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

    torchvision's ``make_grid`` layout (a test pins it), written out: importing torchvision costs every process
    that draws a grid (the render, latent_walk and export stages, ``wgan sample``) about a second more than
    torch alone, for these few lines. Unlike torchvision's, a grid of one image has its border too."""
    n, h, w = images.shape
    cols = min(nrow, n)
    rows = math.ceil(n / cols)
    grid = np.zeros((rows * (h + padding) + padding, cols * (w + padding) + padding), dtype=np.uint8)
    for k, image in enumerate(images):
        top, left = (padding + (h + padding) * i for i in divmod(k, cols))
        grid[top : top + h, left : left + w] = image
    return grid.repeat(scale, axis=0).repeat(scale, axis=1) if scale > 1 else grid


def caption_text(epoch: int, iteration: int) -> str:
    """The caption under a grid (epoch as stored: 0-based, like the tutorial's log)."""
    return f"epoch {epoch}  iter {iteration}"


def render_grids(
    samples_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], cfg: RenderConfig
) -> RenderSummary:
    """Write one grid per snapshot plus ``final.png`` into ``out_dir``, replacing its old content."""
    start = time.perf_counter()
    samples = load_samples(samples_path)
    index, row_digits = _layout(samples, cfg, samples_path)
    # The same images of the fixed batch in every grid, so frames show the same latents.
    images = torch.stack(samples.images)[:, index, 0].numpy()
    epochs, iterations = samples.epoch, samples.iteration
    count = len(samples)
    font = ImageFont.load_default(size=FONT_PX * cfg.scale) if cfg.caption else None
    last_iteration = max(iterations)
    width = height = 0
    last_path: Path | None = None
    with replaced_dir(out_dir) as tmp:
        for i in range(count):
            grid = make_grid(images[i], cfg.nrow, cfg.padding, cfg.scale)
            if font is not None:
                grid = _add_caption(grid, caption_text(epochs[i], iterations[i]), font, cfg.scale)
                if row_digits:
                    grid = _add_row_labels(grid, row_digits, images.shape[2], font, cfg)
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


def _layout(samples: Samples, cfg: RenderConfig, source: str | os.PathLike[str]) -> tuple[torch.Tensor, list[int]]:
    """Which fixed samples a grid shows, in order, and the digit of each row (empty: not a conditional run)."""
    available = int(samples.images[0].shape[0])
    if samples.labels is None:
        if cfg.n_images > available:
            raise UserError(
                f"render.n_images = {cfg.n_images} is more than the {available} fixed samples per snapshot in "
                f"{source}; lower render.n_images or raise train.n_fixed and {rerun('train')}"
            )
        return torch.arange(cfg.n_images), []
    digits = sorted(set(samples.labels.tolist()))
    per_digit = min(int((samples.labels == d).sum()) for d in digits)
    if cfg.nrow > per_digit:
        raise UserError(
            f"render.nrow = {cfg.nrow} is more than the {per_digit} fixed samples of each digit in {source} (a "
            f"conditional run draws a row per digit); lower render.nrow or raise train.n_fixed and {rerun('train')}"
        )
    rows = [torch.nonzero(samples.labels == d).flatten()[: cfg.nrow] for d in digits]
    return torch.cat(rows), digits


def _add_row_labels(
    grid: np.ndarray, digits: list[int], image_h: int, font: ImageFont.FreeTypeFont, cfg: RenderConfig
) -> np.ndarray:
    """Prepend a black strip on the left with each row's digit, centred on the row of ``image_h``-pixel images."""
    strip = CAPTION_PX * cfg.scale
    frame = np.zeros((grid.shape[0], grid.shape[1] + strip), dtype=np.uint8)
    frame[:, strip:] = grid
    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    for row, digit in enumerate(digits):
        centre = cfg.scale * (cfg.padding + row * (image_h + cfg.padding) + image_h / 2)
        draw.text((strip / 2, centre), str(digit), fill=255, font=font, anchor="mm")
    return np.asarray(image)
