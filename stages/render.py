"""DVC stage `render`: models/samples.pt -> results/samples/grid_*.png and final.png."""

from __future__ import annotations

from wgan import paths
from wgan.config import load_section
from wgan.images.render import render_grids
from wgan.stage import run_stage


def main() -> None:
    """Render every fixed-noise snapshot as a grid, replacing the previous grids."""
    summary = render_grids(paths.SAMPLES, paths.GRIDS, load_section("render"))
    print(
        f"render: {summary.count} grids of {summary.width}x{summary.height} px in {paths.GRIDS} "
        f"({summary.seconds:.1f} s)"
    )


if __name__ == "__main__":
    run_stage(main)
