"""DVC stage `latent_walk`: models/generator.pt -> results/latent_walk.gif (see wgan.images.latent).

The generator's file records the normalization it was trained with, so this stage tracks no prepare params.
"""

from __future__ import annotations

from wgan import paths
from wgan.config import load_section
from wgan.images.generate import Layout, load_generator, walk_pixels, write_walk
from wgan.stage import run_stage


def main() -> None:
    """Walk the trained generator's latent space in a loop, ``latent_walk.n`` walks side by side."""
    cfg = load_section("latent_walk")
    generator, norm = load_generator(paths.GENERATOR)
    frames = walk_pixels(generator, cfg.n, cfg.steps, cfg.points, cfg.seed, norm)
    layout = Layout(cfg.nrow, cfg.padding, cfg.scale)
    written, size = write_walk(frames, paths.LATENT_WALK, layout, cfg.duration_ms, cfg.loop)
    print(
        f"latent_walk: {paths.LATENT_WALK} with {written} frames of {cfg.n} walks through {cfg.points} points, "
        f"{size / 1e6:.2f} MB"
    )


if __name__ == "__main__":
    run_stage(main)
