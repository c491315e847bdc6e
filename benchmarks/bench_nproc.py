"""Training as 1 and as N processes (torchrun, via WGAN_NPROC): same weights, and the speed of each, interleaved.

    python benchmarks/bench_nproc.py [--nproc 2] [--rounds 3] [--iters 400] [--tol 1e-3]

Run from the project root with ``data/prepared`` present; the device is ``WGAN_DEVICE`` (default the fastest;
on a machine with several GPUs, ``--nproc`` GPUs, one a process). Each round runs the real train stage for
``--iters`` iterations of this ``params.yaml``'s train section in a temporary folder, once per process count.
Reported: the largest weight difference between the 1- and N-process models (limit ``--tol`` x the largest
|weight|; exit 1 beyond it), then per process count DVCLive's ``perf/iters_per_sec`` averaged after its first
point (startup excluded) and the stage's wall time (startup included). ``gpu_check.py`` calls ``compare``.
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

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
PREPARED = ROOT / "data" / "prepared"


def one_run(nproc: int, iters: int, workdir: Path) -> tuple[float, float, dict[str, torch.Tensor]]:
    """(iterations per second in the loop, wall seconds of the stage, the weights of both models) of one run."""
    shutil.rmtree(workdir, ignore_errors=True)
    (workdir / "data").mkdir(parents=True)
    (workdir / "data/prepared").symlink_to(PREPARED)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"].update(max_iterations=iters, log_every=50, sample_interval=10**6)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "WGAN_NPROC": str(nproc), "PYTHONPATH": str(ROOT / "src")}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "stages/train.py")], cwd=workdir, env=env, capture_output=True)
    if proc.returncode:
        raise SystemExit(f"the {nproc}-process run failed ({proc.returncode}):\n{proc.stderr[-2000:].decode()}")
    wall = time.perf_counter() - start
    rows = (workdir / "dvclive/plots/metrics/perf/iters_per_sec.tsv").read_text().splitlines()[1:]
    rates = [float(row.split("\t")[-1]) for row in rows][1:]
    weights = {}
    for name in ("generator", "critic"):
        state = torch.load(workdir / f"models/{name}.pt", weights_only=True)["state_dict"]
        weights.update({f"{name}.{key}": value for key, value in state.items() if value.is_floating_point()})
    return statistics.mean(rates), wall, weights


def compare(nproc: int, rounds: int, iters: int, tol: float) -> tuple[bool, list[str]]:
    """Whether the 1- and ``nproc``-process weights agree within ``tol``; the report lines (a markdown table)."""
    runs: dict[int, list[tuple[float, float, dict[str, torch.Tensor]]]] = {1: [], nproc: []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            for count, results in runs.items():
                results.append(one_run(count, iters, Path(tmp) / "run"))
    one, many = runs[1][0][2], runs[nproc][0][2]
    scale = max(value.abs().max().item() for value in one.values())
    worst_key = max(one, key=lambda key: (one[key] - many[key]).abs().max().item())
    worst = (one[worst_key] - many[worst_key]).abs().max().item()
    ok = worst <= tol * scale
    lines = [
        f"{'match' if ok else 'MISMATCH'} 1 vs {nproc} processes after {iters} iterations: max |weight difference| "
        f"{worst:.3g} in {worst_key} (limit {tol:g} x {scale:.3g})",
        f"load average {os.getloadavg()[0]:.2f} at the end",
        "| processes | it/s per round | median it/s | median stage wall s |",
        "|---|---|---|---|",
    ]
    for count, results in runs.items():
        rates = ", ".join(f"{rate:.1f}" for rate, _, _ in results)
        rate, wall = statistics.median(r for r, _, _ in results), statistics.median(w for _, w, _ in results)
        lines.append(f"| {count} | {rates} | {rate:.1f} | {wall:.1f} |")
    return ok, lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=400)
    parser.add_argument("--tol", type=float, default=1e-3, help="weight difference limit, share of max |weight|")
    args = parser.parse_args()
    ok, lines = compare(args.nproc, args.rounds, args.iters, args.tol)
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
