"""DVC stage `gif`: results/samples/grid_*.png -> results/wgan.gif."""

from __future__ import annotations

from wgan import paths
from wgan.config import load_section
from wgan.images.gif import build_gif
from wgan.stage import run_stage


def main() -> None:
    """Animate the grids in training order."""
    summary = build_gif(paths.GRIDS, paths.GIF, load_section("gif"))
    print(
        f"gif: {paths.GIF} with {summary.frames} frames from {summary.grids} grids, {summary.size_bytes / 1e6:.2f} MB"
    )


if __name__ == "__main__":
    run_stage(main)
