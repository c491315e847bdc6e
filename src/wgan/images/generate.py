"""Images from a trained generator: sample grids, one PNG per image, and latent-walk GIFs.

Shared by the ``wgan`` command and the ``latent_walk`` stage. The generator runs in eval mode on the CPU, in
batches whose size does not change the result, from latents drawn by ``models.sampling.draw_latents``: the same
seed gives the same pixels. Grids are ``wgan.images.render.make_grid``'s layout and GIFs are written by
``wgan.images.gif.write_gif``, so they look like the render and gif stages' output.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from wgan.config import PARAMS_FILE, defaults, load_section
from wgan.data.model_file import Norm, load_model_and_norm
from wgan.data.prepared import to_uint8
from wgan.errors import UserError
from wgan.fileio import atomic_path
from wgan.images.gif import index_width, write_gif
from wgan.images.latent import latent_walk
from wgan.images.render import make_grid
from wgan.models.conditional import ConditionalGenerator
from wgan.models.networks import Generator
from wgan.models.sampling import balanced_digits, draw_latents, sample

SAMPLE_INDEX_DIGITS = 4  # minimum width of the number in a per-image file name: sample_0000.png


@dataclass(frozen=True)
class Layout:
    """How images are tiled into a grid: ``nrow`` per row, ``padding`` black pixels apart, upscaled ``scale``x."""

    nrow: int = 8
    padding: int = 2
    scale: int = 2


def load_generator(
    path: str | os.PathLike[str], hint: str | None = None, params_path: str | os.PathLike[str] = PARAMS_FILE
) -> tuple[Generator | ConditionalGenerator, Norm]:
    """A trained generator, and the (mean, std) that maps its output to pixels: the one its file records.

    A file written before model files recorded it falls back on ``params_path``'s prepare section (the defaults
    when there is none), with a note on stderr: that is what the file was read with before.
    """
    generator, norm = load_model_and_norm(path, (Generator, ConditionalGenerator), hint)
    if norm is None:
        found = Path(params_path).is_file()
        cfg = load_section("prepare", params_path) if found else defaults("prepare")
        norm = cfg.mean, cfg.std
        print(
            f"note: {path} does not record the normalization it was trained with (written before model files did); "
            f"mapping its output to pixels with prepare.mean {cfg.mean:g}, prepare.std {cfg.std:g} "
            f"from {params_path if found else 'the defaults'}",
            file=sys.stderr,
        )
    return generator, norm


def digits_for(generator: Generator | ConditionalGenerator, n: int, digit: int | None) -> torch.Tensor | None:
    """The digits of ``n`` images: ``digit`` for each, or 0, 1, ..., 9, 0, ... when none is asked for; None for the
    tutorial's (unconditional) generator, which cannot be asked for a digit."""
    if not isinstance(generator, ConditionalGenerator):
        if digit is not None:
            raise UserError(
                "--digit needs a conditional generator (train with train.conditional: true); this one draws "
                "random digits: leave --digit out"
            )
        return None
    if digit is not None and not 0 <= digit < generator.n_classes:
        raise UserError(f"--digit {digit} is not a digit of this generator (0 to {generator.n_classes - 1})")
    return torch.full((n,), digit) if digit is not None else balanced_digits(n, generator.n_classes)


@torch.no_grad()
def generate(
    generator: Generator | ConditionalGenerator,
    z: torch.Tensor,
    norm: Norm,
    labels: torch.Tensor | None = None,
    truncation: float | None = None,
) -> np.ndarray:
    """uint8 images [N, H, W] of latents ``z`` [N, latent_dim] (and, for a conditional generator, digits
    ``labels`` [N]), with the generator in eval mode, truncated at ``truncation`` (``models.sampling.sample``)."""
    channels = generator.img_shape[0]
    if channels != 1:
        raise UserError(f"the generator makes {channels}-channel images; wgan draws grayscale ones (1 channel)")
    return to_uint8(sample(generator, z, labels, truncation=truncation), *norm)[:, 0].numpy()


def sample_pixels(
    generator: Generator | ConditionalGenerator,
    n: int,
    seed: int,
    norm: Norm,
    digit: int | None = None,
    truncation: float | None = None,
) -> np.ndarray:
    """``n`` images [n, H, W] of the latents drawn with ``seed``, truncated at ``truncation`` (of ``digit``, for a
    conditional generator)."""
    labels = digits_for(generator, n, digit)
    return generate(generator, draw_latents((n,), generator.latent_dim, seed), norm, labels, truncation)


def walk_pixels(
    generator: Generator | ConditionalGenerator,
    n: int,
    steps: int,
    points: int,
    seed: int,
    norm: Norm,
    digit: int | None = None,
    truncation: float | None = None,
) -> np.ndarray:
    """``n`` closed walks in lockstep through ``points`` random latents each: uint8 frames [steps, n, H, W].

    Every frame is truncated at ``truncation`` (one fit for the whole walk). A conditional generator keeps each
    walk on one digit: ``digit``, or walk ``i`` on digit ``i % 10``."""
    anchors = draw_latents((points, n), generator.latent_dim, seed)
    z = latent_walk(anchors, steps)
    row_digits = digits_for(generator, n, digit)
    labels = None if row_digits is None else row_digits.repeat(steps)
    images = generate(generator, z.reshape(steps * n, -1), norm, labels, truncation)
    return images.reshape(steps, n, *images.shape[1:])


def save_png(pixels: np.ndarray, path: str | os.PathLike[str]) -> None:
    """Write a uint8 [H, W] array as a grayscale PNG, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG")


def write_grid(images: np.ndarray, path: str | os.PathLike[str], layout: Layout) -> tuple[int, int]:
    """Write ``images`` [N, H, W] as one grid PNG; return its (width, height)."""
    grid = make_grid(images, layout.nrow, layout.padding, layout.scale)
    save_png(grid, path)
    return grid.shape[1], grid.shape[0]


def write_each(images: np.ndarray, folder: str | os.PathLike[str], scale: int) -> list[Path]:
    """Write one PNG per image, ``sample_<i>.png`` upscaled ``scale``x, into ``folder``; return the paths."""
    digits = index_width(len(images) - 1, SAMPLE_INDEX_DIGITS)
    paths = [Path(folder) / f"sample_{i:0{digits}d}.png" for i in range(len(images))]
    for image, path in zip(images, paths, strict=True):
        save_png(make_grid(image[None], 1, 0, scale), path)
    return paths


def write_walk(
    frames: np.ndarray, path: str | os.PathLike[str], layout: Layout, duration_ms: int, loop: int
) -> tuple[int, int]:
    """Write frames [S, n, H, W] as an animated GIF of grids, ``duration_ms`` each; return (frames written, bytes)."""
    grids = [Image.fromarray(make_grid(frame, layout.nrow, layout.padding, layout.scale)) for frame in frames]
    written = write_gif(grids, [duration_ms] * len(grids), loop, path)
    return written, Path(path).stat().st_size
