"""The ``wgan`` command: use the trained generator, and compare seed-replicated experiments.

    wgan sample --n 64 --seed 0 --out digits.png      a grid (or --out some/dir/: one PNG per image)
    wgan sample --digit 7 --out sevens.png            a conditional generator draws the digit asked for
    wgan sample --select 0.6 --out s.png              truer digits, variety kept (PSI in (0, 1]; needs the classifier)
    wgan sample --truncation 0.3 --out t.png          truer digits, less variety (PSI in (0, 1], 1: none)
    wgan sample --model models/export --out d.png     from an exported folder (the export stage, the Hub)
    wgan interpolate --n 8 --steps 32 --out walk.gif  latent walks that loop, as a GIF
    wgan compare [--metric fid ...] [--md]            experiments grouped by params, mean ± CI over seeds
    wgan plots [--out results/plots]                  every Vega plot of dvc.yaml as a PNG, drawn offline

Only argument parsing lives here; the work is in ``images.generate``, ``images.latent``, ``commands.compare`` and
``commands.plots`` (imported per subcommand, so ``wgan compare`` and ``wgan plots`` do not load torch). Errors are
one line and exit code 2, through the same wrapper as the stages (``wgan.stage.run_stage``).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from wgan import paths
from wgan.commands import plots as plot_pngs  # light: it loads vl-convert only to render
from wgan.errors import UserError
from wgan.stage import run_stage

if TYPE_CHECKING:
    from wgan.models.conditional import ConditionalGenerator
    from wgan.models.networks import Generator

MODEL = "models/generator.pt"
MODEL_HINT = "pass --model PATH, or train one with `dvc repro train`"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is a ``UserError``: one line and exit code 2 like every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{message}; see `{self.prog} --help`")


def _commits(text: str) -> int:
    """``--num``: a count of commits, or -1 for all of them (DVC's convention)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value == 0 or value < -1:
        raise argparse.ArgumentTypeError(f"expected a count of commits >= 1, or -1 for all, got {text!r}")
    return value


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}")
        return value

    return parse


def _truncation(text: str) -> float:
    """``--truncation``: a number in (0, 1]."""
    from wgan.models.sampling import check_truncation  # here, not at the top: it loads torch

    try:
        value = float(text)
        check_truncation(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1] (1: none), got {text!r}") from err
    return value


def _select(text: str) -> float:
    """``--select``: a number in (0, 1]."""
    from wgan.selection.selection import check_select  # here, not at the top: it loads torch

    try:
        value = float(text)
        check_select(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1] (1: rebalancing alone), got {text!r}") from err
    return value


def _generator_args(parser: argparse.ArgumentParser, n: int, out: str) -> None:
    parser.add_argument(
        "--model", default=MODEL, help="the trained generator, or an exported folder (default: %(default)s)"
    )
    parser.add_argument("--n", type=_int_at_least(1), default=n, help="how many images (default: %(default)s)")
    parser.add_argument("--seed", type=_int_at_least(0), default=0, help="latent draw (default: %(default)s)")
    parser.add_argument("--out", default=out, help="output file (default: %(default)s)")
    parser.add_argument("--nrow", type=_int_at_least(1), default=8, help="images per grid row (default: %(default)s)")
    parser.add_argument("--padding", type=_int_at_least(0), default=2, help="pixels between images (default: 2)")
    parser.add_argument("--scale", type=_int_at_least(1), default=2, help="integer upscale factor (default: 2)")
    parser.add_argument(
        "--digit",
        type=_int_at_least(0),
        help="the digit to draw, with a conditional generator (default: 0, 1, ..., 9 in turn)",
    )
    parser.add_argument(
        "--truncation",
        type=_truncation,
        metavar="PSI",
        help="density truncation, PSI in (0, 1]: pull each sample's hidden activation to within the PSI-quantile "
        "radius of its nearest centre of the generator's own activations; a smaller PSI gives truer digits and less "
        "variety, 1 none; the fit takes seconds (default: none)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="wgan", description="Use the trained WGAN generator and compare experiments.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{sample,interpolate,compare,plots}")

    sample = sub.add_parser("sample", help="draw digits as a grid PNG or one PNG each", description=_doc(cmd_sample))
    _generator_args(sample, 64, "digits.png")
    sample.add_argument(
        "--select",
        type=_select,
        metavar="PSI",
        help="rejection sampling, PSI in (0, 1]: of n/(0.25 PSI) candidates, those whose realism (in the classifier's "
        "feature space) is in the top PSI share pass, and the n places go to clusters of the training images' "
        "features by their shares, passing candidates first: truer digits with the variety kept (the measured best "
        "dial; 0.6 is the tuned setting, 1 rebalancing alone); not with --truncation (default: none)",
    )
    sample.add_argument(
        "--classifier", default=str(paths.CLASSIFIER), help="--select's classifier (default: %(default)s)"
    )
    sample.add_argument(
        "--real-features",
        default=str(paths.REAL_FEATURES),
        help="--select's training-image features, written with that classifier (default: %(default)s)",
    )
    sample.set_defaults(func=cmd_sample)

    walk = sub.add_parser("interpolate", help="latent walks that loop, as a GIF", description=_doc(cmd_interpolate))
    _generator_args(walk, 8, "walk.gif")
    walk.add_argument("--steps", type=_int_at_least(2), default=32, help="frames per loop (default: %(default)s)")
    walk.add_argument("--points", type=_int_at_least(2), default=4, help="random points per walk (default: 4)")
    walk.add_argument("--duration-ms", type=_int_at_least(1), default=80, help="per frame (default: %(default)s)")
    walk.add_argument("--loop", type=_int_at_least(0), default=0, help="GIF loop count, 0 = forever (default: 0)")
    walk.set_defaults(func=cmd_interpolate)

    comp = sub.add_parser("compare", help="seed-replicated experiments: mean ± CI", description=_doc(cmd_compare))
    comp.add_argument(
        "--metric",
        action="append",
        help="a metric to compare, repeatable (default: fid precision recall judge_fid, the last when reported)",
    )
    comp.add_argument("--md", action="store_true", help="print a Markdown table")
    comp.add_argument("--repo", default=".", help="the DVC project (default: the current folder)")
    comp.add_argument("--seed-param", default="train.seed", help="the param that tells replicates apart")
    comp.add_argument(
        "--num",
        type=_commits,
        default=1,
        help="the experiments of the last NUM commits, -1 for all, like `dvc exp show --num` (default: 1)",
    )
    comp.set_defaults(func=cmd_compare)

    plots = sub.add_parser("plots", help="every Vega plot of dvc.yaml as a PNG", description=_doc(cmd_plots))
    plots.add_argument("--out", default=plot_pngs.OUT, help="the folder of PNGs (default: %(default)s)")
    plots.add_argument("--repo", default=".", help="the DVC project (default: the current folder)")
    plots.add_argument(
        "--scale", type=_int_at_least(1), default=plot_pngs.SCALE, help="pixels per chart pixel (default: %(default)s)"
    )
    plots.set_defaults(func=cmd_plots)
    return parser


def _doc(func: object) -> str:
    return (getattr(func, "__doc__", None) or "").strip()


def _output(out: str, suffix: str) -> Path:
    """``out`` if it names a ``suffix`` file; a one-line error otherwise."""
    path = Path(out)
    if path.suffix.lower() != suffix:
        raise UserError(f"--out {out} must end in {suffix}; name a {suffix} file")
    if path.is_dir():
        raise UserError(f"--out {out} is a folder; name a {suffix} file")
    return path


def _load(model: str) -> tuple[Generator | ConditionalGenerator, tuple[float, float]]:
    """The generator and the normalization that maps its output to pixels: the one its file records, or an
    exported folder's (config.json, written by the export stage)."""
    if Path(model).is_dir():
        from wgan.export.hub import load_folder  # here, not at the top: `wgan compare` needs no torch

        exported, norm = load_folder(model)
        return exported.generator, norm
    from wgan.images.generate import load_generator

    return load_generator(model, MODEL_HINT)


def cmd_sample(args: argparse.Namespace) -> None:
    """Draw --n digits from the latents of --seed (eval mode, CPU: the same seed gives the same pixels) and write
    them as one grid (--out x.png, --nrow per row) or, with --out some/dir/, one PNG per image. --select PSI picks
    them among more of the seed's latents (``wgan.selection.selection``)."""
    from wgan.images.generate import Layout, digits_for, generate, sample_pixels, write_each, write_grid

    folder = args.out.endswith(("/", os.sep)) or Path(args.out).is_dir()
    out = Path(args.out) if folder else _output(args.out, ".png")
    if args.select is not None and args.truncation is not None:
        raise UserError("--select and --truncation are two fidelity dials; pass one of them")
    generator, norm = _load(args.model)
    if args.select is None:
        pixels = sample_pixels(generator, args.n, args.seed, norm, args.digit, args.truncation)
    else:
        import torch

        from wgan.selection.selection import selected_latents

        digits = digits_for(generator, args.n, args.digit)
        wanted = torch.zeros(args.n, dtype=torch.int64) if digits is None else digits
        z = selected_latents(generator, args.select, args.seed, wanted, args.classifier, args.real_features)
        pixels = generate(generator, z, norm, digits)
    if folder:
        paths = write_each(pixels, out, args.scale)
        side = pixels.shape[-1] * args.scale
        print(f"wrote {len(paths)} PNGs of {side}x{side} px to {out}/")
    else:
        width, height = write_grid(pixels, out, Layout(args.nrow, args.padding, args.scale))
        print(f"wrote {out}: {args.n} digits, {width}x{height} px")


def cmd_interpolate(args: argparse.Namespace) -> None:
    """Walk --n rows in lockstep through --points random latents each (spherical interpolation) and back to the
    start, --steps frames in all, and write them as a looping GIF (--out x.gif)."""
    from wgan.images.generate import Layout, walk_pixels, write_walk

    out = _output(args.out, ".gif")
    if args.points > args.steps:
        raise UserError(f"--points {args.points} is more than --steps {args.steps}; every point needs a frame")
    generator, norm = _load(args.model)
    frames = walk_pixels(generator, args.n, args.steps, args.points, args.seed, norm, args.digit, args.truncation)
    written, size = write_walk(frames, out, Layout(args.nrow, args.padding, args.scale), args.duration_ms, args.loop)
    print(f"wrote {out}: {written} frames of {args.n} walks, {size / 1e6:.2f} MB")


def cmd_compare(args: argparse.Namespace) -> None:
    """Group the DVC experiments of this commit (--num: of the last NUM commits) that differ only in the seed, and
    print one row per group: the params that differ, the seed count and each metric's mean ± 95% confidence
    interval, marking differences within seed noise (Welch's t-test, p > 0.05)."""
    from wgan.commands.compare import compare_experiments, report

    metrics = list(dict.fromkeys(args.metric)) if args.metric else None  # None: the defaults, judge_fid if reported
    print(report(compare_experiments(args.repo, metrics, args.seed_param, args.num), markdown=args.md))


def cmd_plots(args: argparse.Namespace) -> None:
    """Render every Vega plot of the project's dvc.yaml files (what `dvc plots show` draws, with the workspace's
    data) to one PNG each in --out, offline. Image plots are files already: they are listed, not copied."""
    written, plots = plot_pngs.render_all(Path(args.repo), Path(args.out), args.scale)
    for path in written:
        print(f"wrote {path}")
    for plot_id in plots.images:
        print(f"image plot, already a file: {plot_id}")
    for plot_id in plots.missing:
        print(f"no data, skipped: {plot_id}")


def main(argv: Sequence[str] | None = None) -> None:
    """The console script ``wgan`` (``[project.scripts]`` in pyproject.toml)."""

    def run() -> None:
        args = build_parser().parse_args(argv)
        args.func(args)

    run_stage(run)


if __name__ == "__main__":
    main()
