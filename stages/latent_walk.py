"""DVC stage `latent_walk`: models/generator.pt -> results/latent_walk.gif (see wgan.latent)."""

from __future__ import annotations

from wgan.cli import run_stage
from wgan.config import load_section
from wgan.generate import Layout, pixel_norm, walk_pixels, write_walk
from wgan.models import load_generator

GENERATOR = "models/generator.pt"
OUT = "results/latent_walk.gif"


def main() -> None:
    """Walk the trained generator's latent space in a loop, ``latent_walk.n`` walks side by side."""
    cfg = load_section("latent_walk")
    generator = load_generator(GENERATOR)
    frames = walk_pixels(generator, cfg.n, cfg.steps, cfg.points, cfg.seed, pixel_norm())
    written, size = write_walk(frames, OUT, Layout(cfg.nrow, cfg.padding, cfg.scale), cfg.duration_ms, cfg.loop)
    print(f"latent_walk: {OUT} with {written} frames of {cfg.n} walks through {cfg.points} points, {size / 1e6:.2f} MB")


if __name__ == "__main__":
    run_stage(main)
