"""The train stage's own cost per iteration (``python stages/train.py``) against a reference, interleaved.

    python benchmarks/bench_stage.py [--reference fb93305] [--rounds 4] [--short 200] [--long 1200]

Each round runs the real stage script of this tree and of the reference (a git commit, unpacked with
``git archive`` into a temporary folder) in alternating order, each at ``--short`` and ``--long`` iterations of
this ``params.yaml``'s train section (its own ``params.yaml`` for the reference, so the keys it knows), in a
temporary folder over ``data/prepared``. A stage's cost per iteration is ``(wall(long) - wall(short)) /
(long - short)``: process start, imports, model summary and output writing cancel, what the loop does around the
step stays. ``--reference step`` times the bare step loop instead (``bench_train.ProjectLoop`` in a process of
its own, the same two lengths): the stage over the step is then what the loop adds.

Reported per round: both costs in ms/it and their ratio (this tree over the reference); then the medians. The
machine may be shared: only ratios within a round compare, and their median is the number to quote. Exit 1 when
the median ratio exceeds ``--limit`` (default 1.1), so the next slide shows up the day it happens.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PREPARED = ROOT / "data" / "prepared"
STEP_LOOP = """
import sys, torch
from bench_train import ProjectLoop
from wgan.config import load_section
from wgan.data.prepared import normalize
from wgan.fileio import torch_load_safe
cfg, prepare = load_section("train"), load_section("prepare")
images = normalize(torch_load_safe("data/prepared/train.pt", "prepared data", "")["images"], prepare.mean, prepare.std)
ProjectLoop(cfg, images, torch.device("cpu")).run(int(sys.argv[1]))
"""


def unpack(commit: str, dest: Path) -> Path:
    """The tree of ``commit`` (``stages/``, ``src/``, ``params.yaml``) in ``dest``, without a git worktree."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", commit], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def project(tree: Path, workdir: Path, iters: int) -> Path:
    """A folder holding ``tree``'s params.yaml limited to ``iters`` iterations and this tree's prepared data."""
    shutil.rmtree(workdir, ignore_errors=True)
    (workdir / "data").mkdir(parents=True)
    (workdir / "data/prepared").symlink_to(PREPARED)
    params = yaml.safe_load((tree / "params.yaml").read_text())
    key = "max_iterations" if "max_iterations" in params["train"] else "max_steps"  # its name before 6109f81
    params["train"][key] = iters
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    return workdir


def wall(tree: Path, workdir: Path, iters: int, bare_step: bool) -> float:
    """Seconds from process start to exit of one stage run (or of the bare step loop) of ``iters`` iterations."""
    project(tree, workdir, iters)
    env = {**os.environ, "PYTHONPATH": f"{tree / 'src'}:{ROOT / 'benchmarks'}", "WGAN_DEVICE": "cpu"}
    cmd = (
        [sys.executable, "-c", STEP_LOOP, str(iters)] if bare_step else [sys.executable, str(tree / "stages/train.py")]
    )
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(
            f"{' '.join(cmd[:2])} in {workdir} failed ({proc.returncode}):\n{proc.stderr[-2000:].decode()}"
        )
    return seconds


def per_iteration(tree: Path, workdir: Path, short: int, long: int, bare_step: bool = False) -> float:
    """Milliseconds per iteration: the difference of a long and a short run over their difference in iterations."""
    return 1000 * (wall(tree, workdir, long, bare_step) - wall(tree, workdir, short, bare_step)) / (long - short)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", default="fb93305", help="a git commit, or 'step' for the bare step loop")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--short", type=int, default=200)
    parser.add_argument("--long", type=int, default=1200)
    parser.add_argument("--limit", type=float, default=1.1, help="largest median ratio that passes (default 1.1)")
    args = parser.parse_args()
    if not (PREPARED / "train.pt").is_file():
        raise SystemExit(f"no {PREPARED}/train.pt: run `dvc repro prepare` first")
    bare_step = args.reference == "step"
    ratios: list[float] = []
    costs: dict[str, list[float]] = {"this tree": [], args.reference: []}
    with tempfile.TemporaryDirectory() as tmp:
        reference = ROOT if bare_step else unpack(args.reference, Path(tmp) / "reference")
        variants = {"this tree": (ROOT, False), args.reference: (reference, bare_step)}
        print(f"{args.rounds} rounds of {args.short} and {args.long} iterations; load average {os.getloadavg()[0]:.2f}")
        for r in range(args.rounds):
            for name in list(variants)[:: 1 if r % 2 == 0 else -1]:  # alternate the order: drift hits both alike
                tree, step_only = variants[name]
                costs[name].append(per_iteration(tree, Path(tmp) / "run", args.short, args.long, step_only))
            ratios.append(costs["this tree"][-1] / costs[args.reference][-1])
            print(
                f"round {r + 1}: this tree {costs['this tree'][-1]:.2f} ms/it, {args.reference} "
                f"{costs[args.reference][-1]:.2f} ms/it, ratio {ratios[-1]:.2f}; load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
    median = statistics.median(ratios)
    print("| variant | ms/it per round | median ms/it |\n|---|---|---|")
    for name, values in costs.items():
        print(f"| {name} | {', '.join(f'{v:.2f}' for v in values)} | {statistics.median(values):.2f} |")
    print(f"ratio this tree / {args.reference}: per round {', '.join(f'{x:.2f}' for x in ratios)}; median {median:.2f}")
    return 0 if median <= args.limit else 1


if __name__ == "__main__":
    sys.exit(main())
