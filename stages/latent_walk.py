"""DVC stage `latent_walk`: models/generator.pt -> results/latent_walk.gif (see wgan.images.latent)."""

from __future__ import annotations

from wgan import paths
from wgan.config import load_section
from wgan.data.model_file import load_model
from wgan.images.generate import Layout, pixel_norm, walk_pixels, write_walk
from wgan.models.conditional import ConditionalGenerator
from wgan.models.networks import Generator
from wgan.stage import run_stage


def main() -> None:
    """Walk the trained generator's latent space in a loop, ``latent_walk.n`` walks side by side."""
    cfg = load_section("latent_walk")
    generator = load_model(paths.GENERATOR, (Generator, ConditionalGenerator))
    frames = walk_pixels(generator, cfg.n, cfg.steps, cfg.points, cfg.seed, pixel_norm())
    layout = Layout(cfg.nrow, cfg.padding, cfg.scale)
    written, size = write_walk(frames, paths.LATENT_WALK, layout, cfg.duration_ms, cfg.loop)
    print(
        f"latent_walk: {paths.LATENT_WALK} with {written} frames of {cfg.n} walks through {cfg.points} points, "
        f"{size / 1e6:.2f} MB"
    )


if __name__ == "__main__":
    run_stage(main)
