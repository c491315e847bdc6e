"""``gpu_check.py``'s checks 3-5: resume on the device, the real stages, and 1 vs several GPUs.

3. Resume: the recipe's training (``wgan.training.loop.train``, in this process, on a 4096-image share of the data)
   stopped at an iteration mid-epoch by a simulated SIGINT, then resumed, ends with the uninterrupted run's
   weights, metric curves and kept generators (exactly: ``--resume-tol`` 0). A second run is stopped with the eager
   step (as several processes would have left it: step counts on the CPU) and resumed with graphs: it must resume
   and end within ``--graph-tol`` of the uninterrupted weights.
4. The real stages: ``python stages/train.py`` with the recipe's params (``--stage-epochs``, ``--stage-precision``),
   then ``classifier``, ``judge``, ``quality``, ``pick_generator`` and ``evaluate``, each a process in a temporary
   project over ``data/prepared``.
   Printed: each stage's wall time (process start to exit) and the training loop's own time (DVCLive's rate
   points), FID. When the timing table projects the training over ``--stage-budget-s``, fewer epochs run (said).
5. With several GPUs: the train stage on 1 GPU vs one process per GPU (``bench_nproc.compare``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import yaml
from bench_nproc import compare as compare_process_counts

from wgan.config import TrainConfig
from wgan.data.prepared import save_prepared
from wgan.errors import UserError
from wgan.fileio import torch_load_safe
from wgan.stage import StageInterrupted
from wgan.training import loop

ROOT = Path(__file__).resolve().parents[1]
PREPARED_DIR = Path("data/prepared")  # of the project it runs in (the root, or a test's folder)
STAGES = ("train", "classifier", "judge", "quality", "pick_generator", "evaluate")  # pick: what evaluate scores


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--resume-epochs", type=int, default=3, help="epochs of the resume check (default 3)")
    parser.add_argument("--resume-tol", type=float, default=0.0, help="resumed vs uninterrupted, graphed (0: exact)")
    parser.add_argument("--stage-epochs", type=int, default=100, help="the recipe's epochs through the stages")
    parser.add_argument("--stage-max-iterations", type=int, default=0, help="train.max_iterations there (0: all)")
    parser.add_argument("--stage-precision", default="fp32", help="train.precision there (default fp32: TF32)")
    parser.add_argument("--stage-budget-s", type=float, default=150.0, help="training time the stage may take")


def run_checks(
    args: argparse.Namespace, base: TrainConfig, device: torch.device, medians: dict[str, dict[str, float]],
    configuration: Callable[..., TrainConfig],
) -> tuple[bool, list[str]]:  # fmt: skip
    if not all((PREPARED_DIR / name).is_file() for name in ("train.pt", "test.pt")):
        return True, ["resume and stages: skipped, no data/prepared/train.pt and test.pt (carry them)"]
    with tempfile.TemporaryDirectory() as tmp:
        ok, lines = resume_check(configuration(base, "recipe", epochs=args.resume_epochs), device, Path(tmp), args)
        print("\n".join(lines), flush=True)
        stage_ok, stage_lines = stage_run(args, device, medians.get("recipe", {}), Path(tmp) / "stages")
        print("\n".join(stage_lines), flush=True)
    gpus_ok, gpu_lines = multi_gpu_check(args.iters, args.tol) if device.type == "cuda" else (True, [])
    return ok and stage_ok and gpus_ok, lines + stage_lines + gpu_lines


# ------------------------------------------------------------------ 3. resume on the device
@contextlib.contextmanager
def _in(folder: Path) -> Iterator[None]:
    before = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


@contextlib.contextmanager
def _stop_at(iteration: int, eager: bool) -> Iterator[None]:
    """A SIGINT seen at ``iteration`` (``Run.poll``, the loop's own stop path); with ``eager`` the eager step."""
    poll, make_step = loop.Run.poll, loop.make_step

    def stop(self: loop.Run, signum: int | None) -> None:
        poll(self, signal.SIGINT if self.state.iteration == iteration else signum)

    loop.Run.poll = stop  # type: ignore[method-assign]
    if eager:
        loop.make_step = lambda *a, **k: make_step(*a, **{**k, "graphs": False})  # type: ignore[assignment]
    try:
        yield
    finally:
        loop.Run.poll, loop.make_step = poll, make_step  # type: ignore[method-assign]


def _project(folder: Path, sizes: tuple[int, int] = (4096, 1024)) -> Path:
    """A project folder with a share of the prepared data: the first images of each split."""
    for split, n in zip(("train", "test"), sizes, strict=True):
        raw = torch_load_safe(PREPARED_DIR / f"{split}.pt", "prepared data", "rebuild it with `dvc repro prepare`")
        save_prepared(
            folder / f"data/prepared/{split}.pt", raw["images"][:n], raw["labels"][:n], raw["mean"], raw["std"]
        )
    return folder


def _run(folder: Path, cfg: TrainConfig, device: torch.device, stop: int | None = None, eager: bool = False) -> Any:
    """``train`` in ``folder``; with ``stop`` it is stopped there first and then resumed (the graphed step)."""
    with _in(folder):
        if stop is not None:
            with _stop_at(stop, eager), contextlib.suppress(StageInterrupted):
                loop.train(cfg, device=device, log=lambda _: None)
        return loop.train(cfg, device=device, log=lambda _: None)


def _curves(folder: Path) -> dict[str, str]:
    metrics = folder / "dvclive/plots/metrics"
    return {str(p.relative_to(metrics)): p.read_text() for p in metrics.rglob("*.tsv") if "perf" not in p.parts}


def resume_check(cfg: TrainConfig, device: torch.device, tmp: Path, args: argparse.Namespace) -> tuple[bool, list[str]]:
    cfg = dataclasses.replace(cfg, keep_every=1, log_every=10, sample_interval=25, precision="fp32")
    full = _run(_project(tmp / "full"), cfg, device)
    per_epoch = full.iterations // cfg.epochs
    stop = per_epoch + per_epoch // 2  # mid-epoch
    resumed = _run(_project(tmp / "resumed"), cfg, device, stop)
    crossed = _run(_project(tmp / "crossed"), cfg, device, stop, eager=True)
    lines, ok = [], True
    for what, other, folder, tol in (
        ("stopped and resumed (graphs)", resumed, tmp / "resumed", args.resume_tol),
        ("stopped eager, resumed with graphs", crossed, tmp / "crossed", args.graph_tol),
    ):
        worst, scale = 0.0, 0.0
        for a, b in ((full.generator, other.generator), (full.critic, other.critic)):
            for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
                if x.is_floating_point():
                    worst, scale = max(worst, (x - y).abs().max().item()), max(scale, x.abs().max().item())
        kept_same = sorted(p.name for p in (tmp / "full/models/kept").iterdir()) == sorted(
            p.name for p in (folder / "models/kept").iterdir()
        )
        curves_same = tol > 0 or _curves(tmp / "full") == _curves(folder)
        good = worst <= tol * scale and kept_same and curves_same
        ok = ok and good
        lines.append(
            f"{'match' if good else 'MISMATCH'} recipe on {device}, {what} at iteration {stop} of {full.iterations}: "
            f"max |weight difference| {worst:.3g} (limit {tol:g} x {scale:.3g}), kept generators "
            f"{'same' if kept_same else 'DIFFER'}, metric curves {'same' if curves_same else 'DIFFER'}"
        )
    return ok, lines


# ------------------------------------------------------------------ 4. the real stages
def _training_seconds(rates: Path) -> float:
    """The training loop's time: the sum over DVCLive's rate points of their iterations over their rate."""
    rows = [line.split("\t") for line in rates.read_text().splitlines()[1:]]
    steps = [0] + [int(float(step)) for step, _ in rows]
    return sum((steps[i + 1] - steps[i]) / float(rate) for i, (_, rate) in enumerate(rows))


def stage_run(
    args: argparse.Namespace, device: torch.device, recipe_ms: dict[str, float], folder: Path
) -> tuple[bool, list[str]]:
    """Check 4: the recipe through the stage scripts, each a process, with their wall times."""
    from gpu_check import CONFIGURATIONS

    if importlib.util.find_spec("dvclive") is None:
        return True, ["the recipe's stages: NOT RUN, dvclive is not importable here (carry a wheelhouse with dvc)"]
    epochs, note = args.stage_epochs, ""
    graphed = recipe_ms.get(f"graphs {args.stage_precision}")
    if graphed and not args.stage_max_iterations:
        projected = epochs * (60000 // CONFIGURATIONS["recipe"]["batch_size"]) * graphed / 1000
        if projected > args.stage_budget_s:
            epochs = max(1, int(epochs * args.stage_budget_s / projected))
            note = f" (the timing table projects {projected:.0f} s for {args.stage_epochs} epochs: ran {epochs})"
    params = yaml.safe_load(Path("params.yaml").read_text())
    train = {**CONFIGURATIONS["recipe"], "epochs": epochs, "precision": args.stage_precision}
    params["train"].update(train, max_iterations=args.stage_max_iterations)
    (folder / "data").mkdir(parents=True)
    (folder / "data/prepared").symlink_to(PREPARED_DIR.resolve())
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "WGAN_DEVICE": str(device)}
    walls, lines = {}, []
    for stage in STAGES:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, str(ROOT / f"stages/{stage}.py")], cwd=folder, env=env,
                              capture_output=True, text=True)  # fmt: skip
        walls[stage] = time.perf_counter() - start
        if done.returncode:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            return False, [f"FAILED stage {stage} (exit {done.returncode}): {' | '.join(tail)}"]
    record = json.loads((folder / "dvclive/metrics.json").read_text())
    scores = json.loads((folder / "results/eval/metrics.json").read_text())
    quality = json.loads((folder / "results/quality/metrics.json").read_text())
    training = _training_seconds(folder / "dvclive/plots/metrics/perf/iters_per_sec.tsv")
    lines.append(
        f"the recipe's stages on {record['run']['device']} ({record['run']['precision']}), {epochs} epochs{note}:"
    )
    lines.append("| stage | wall s (process start to exit) |\n|---|---|")
    lines += [f"| {stage} | {seconds:.1f} |" for stage, seconds in walls.items()]
    lines.append(
        f"train: {record['step']} iterations, training loop {training:.1f} s of {walls['train']:.1f} s "
        f"({walls['train'] - training:.1f} s fixed: imports, summary, capture, kept generators, writing); "
        f"FID {scores['fid']:.3g}, quality's best epoch {quality['best_epoch']} "
        f"(FID {quality['best_fid']:.3g} against its held-out training slice, not the test split)"
    )
    return True, lines


# ------------------------------------------------------------------ 5. 1 vs several GPUs
def multi_gpu_check(iters: int, tol: float) -> tuple[bool, list[str]]:
    """The train stage on 1 GPU against one process per visible GPU (skipped with fewer than 2)."""
    count = torch.cuda.device_count()
    if count < 2:
        return True, ["1 vs all GPUs: skipped, one GPU visible"]
    try:
        return compare_process_counts(count, rounds=2, iters=iters, tol=tol)
    except (UserError, SystemExit) as exc:
        return False, [f"FAILED 1 vs {count} GPUs: {exc}"]
