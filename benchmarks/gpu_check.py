"""The GPU check in one run: every configuration agrees (CPU vs GPU, eager vs graphs), the timing table, resume on
the device, and the real stages.

    python benchmarks/gpu_check.py [--device cuda] [--steps 50] [--rounds 4] [--iters 300] [--stage-epochs 100]

Run from the project root: it reads ``params.yaml`` and ``data/prepared`` (real MNIST; else random images, and the
resume and stage checks are skipped). ``benchmarks/gpu_check.sh`` sets up Python and calls this. Each configuration
of ``CONFIGURATIONS`` (the tutorial's, the 100-epoch recipe, the fast recipe, the conditional recipe; as
docs/training.md gives them) is ``params.yaml``'s train section with its overrides.

1. Agreement, fp32, ``--steps`` iterations of the same batches: ``cpu`` vs ``<device> eager``, both drawing their
   noise from one CPU stream, within ``--tol`` of the largest |loss| (TF32 matmuls on CUDA); ``<device> eager`` vs
   ``<device> graphs`` (``GraphedStep``, the train stage's step there), both on the device's noise stream, within
   ``--graph-tol``. With ``--device cpu`` the graphed step runs its bodies eagerly (``EagerRecorder``).
2. Timing, interleaved rounds: eager fp32 (TF32 on CUDA), graphs fp32, graphs bf16 (the tutorial's configuration
   also the tutorial's own loop); medians, the projected training time, and the GPU operations of one eager
   iteration (torch.profiler) with the floor they imply at ``KERNEL_US`` each.
3. and 4. ``gpu_stages``: the recipe stopped and resumed on the device (graphed, and stopped eager then resumed
   graphed), then the real stages (train, classifier, judge, quality, pick_generator, evaluate) with their wall times.
Prints one summary table; exit 1 when a check fails.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from typing import Any

import gpu_stages
import torch
from bench_train import PREPARED, PilDataset, TutorialLoop, interleaved, load_text
from torchvision import transforms

from wgan.config import TrainConfig, load_section, parse_section, to_dict
from wgan.data.prepared import normalize
from wgan.fileio import torch_load_safe
from wgan.models.conditional import build_conditional_models
from wgan.models.networks import build_models
from wgan.training.batches import derive_seed, epoch_batches
from wgan.training.cuda_graphs import EagerRecorder, GraphedStep, make_step
from wgan.training.step import M_CRITIC, M_GENERATOR, WGANStep

MNIST_TRAIN_SIZE = 60000
KERNEL_US = 3.0  # the graphed tutorial step's time per kernel on an H200 (docs/benchmarks.md, 2026-12-04)
RECIPE = {
    "epochs": 100, "loss": "wgan-gp", "optimizer": "adam", "lr": 1e-4, "critic_lr": 2e-4, "batch_size": 128,
    "n_critic": 1, "betas": [0.0, 0.9], "gp_lambda": 2.5, "ema_decay": 0.999, "precision": "bf16",
}  # fmt: skip
CONFIGURATIONS: dict[str, dict[str, Any]] = {  # docs/training.md, "Recipes"
    "tutorial": {},
    "recipe": RECIPE,
    "fast recipe": {**RECIPE, "gp_lambda": 5.0, "epochs": 50},
    "conditional recipe": {
        "conditional": True, "loss": "wgan-gp", "optimizer": "adam", "lr": 1e-4, "betas": [0.5, 0.9],
        "n_critic": 2, "ema_decay": 0.999, "epochs": 100, "precision": "bf16",
    },
}  # fmt: skip


def configuration(base: TrainConfig, name: str, **more: Any) -> TrainConfig:
    """``base`` (params.yaml's train section) with the overrides of configuration ``name`` and ``more``."""
    return parse_section("train", {**to_dict(base), **CONFIGURATIONS[name], **more})


def build_step(cfg: TrainConfig, device: torch.device, noise: torch.Generator, graphs: bool) -> WGANStep:
    """The eager step, or the graphed one (on the CPU: its bodies run eagerly, the self-test)."""
    generator, critic = (build_conditional_models if cfg.conditional else build_models)(cfg, device)
    if graphs and device.type == "cpu":
        return GraphedStep(cfg, generator, critic, noise, recorder=EagerRecorder())
    return make_step(cfg, generator, critic, noise, graphs=graphs)


def losses_per_step(
    cfg: TrainConfig, batches: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device,
    noise: torch.Generator, graphs: bool,
) -> torch.Tensor:  # fmt: skip
    """[steps, 2]: each iteration's critic loss and generator loss (NaN where no generator step ran)."""
    step = build_step(cfg, device, noise, graphs)
    rows = []
    for i, (real, labels) in enumerate(batches):
        step(real.to(device), i, labels.to(device) if cfg.conditional else None)
        metrics = step.take_metrics()  # one host sync per step: fine for a check
        rows.append([metrics[M_CRITIC], metrics.get(M_GENERATOR, float("nan"))])
    return torch.tensor(rows, dtype=torch.float64)


def compare(name: str, a: torch.Tensor, b: torch.Tensor, tol: float) -> tuple[bool, str]:
    """Whether ``a`` and ``b`` agree within ``tol`` of the largest |value| of ``a``, and the verdict line."""
    seen = ~torch.isnan(a)
    if not torch.equal(seen, ~torch.isnan(b)):
        return False, f"MISMATCH {name}: generator steps ran on different iterations"
    scale = a[seen].abs().max().item()
    worst = (a[seen] - b[seen]).abs().max().item()
    ok = worst <= tol * scale
    return ok, f"{'match' if ok else 'MISMATCH'} {name}: max |difference| {worst:.3g} (limit {tol:g} x {scale:.3g})"


def check_agreement(
    cfg: TrainConfig, images: torch.Tensor, labels: torch.Tensor, device: torch.device, steps: int, tol: float,
    graph_tol: float,
) -> tuple[bool, list[str]]:  # fmt: skip
    """Check 1 of the module docstring for one configuration (in fp32)."""
    cfg = dataclasses.replace(cfg, precision="fp32")
    pick = torch.Generator().manual_seed(derive_seed(cfg.seed, "shuffle"))
    order = torch.randperm(len(images), generator=pick)
    rows = [order[i * cfg.batch_size : (i + 1) * cfg.batch_size] for i in range(steps)]
    batches = [(images[r], labels[r]) for r in rows]
    seed = derive_seed(cfg.seed, "noise")
    cpu = losses_per_step(cfg, batches, torch.device("cpu"), torch.Generator().manual_seed(seed), graphs=False)
    moved = losses_per_step(cfg, batches, device, torch.Generator().manual_seed(seed), graphs=False)
    eager = losses_per_step(cfg, batches, device, torch.Generator(device).manual_seed(seed), graphs=False)
    graphed = losses_per_step(cfg, batches, device, torch.Generator(device).manual_seed(seed), graphs=True)
    checks = [
        compare(f"cpu vs {device} eager, {steps} steps", cpu, moved, tol),
        compare(f"{device} eager vs {device} graphs, {steps} steps", eager, graphed, graph_tol),
    ]
    return all(ok for ok, _ in checks), [line for _, line in checks]


class ConfigLoop:
    """The train stage's batches and step for one configuration, resumable in chunks of iterations."""

    def __init__(
        self, cfg: TrainConfig, images: torch.Tensor, labels: torch.Tensor, device: torch.device, graphs: bool
    ) -> None:
        self.cfg, self.images, self.labels = cfg, images.to(device), labels.to(device)
        self.step = build_step(cfg, device, torch.Generator(device).manual_seed(derive_seed(cfg.seed, "noise")), graphs)
        self.shuffle = torch.Generator(device).manual_seed(derive_seed(cfg.seed, "shuffle"))
        self.batches = iter(())
        self.iteration = 0

    def run(self, iterations: int) -> None:
        for _ in range(iterations):
            batch = next(self.batches, None)
            if batch is None:
                self.batches = epoch_batches(self.images, self.cfg.batch_size, self.shuffle, labels=self.labels)
                batch = next(self.batches)
            self.step(batch[0], self.iteration, batch[1] if self.cfg.conditional else None)
            self.iteration += 1
            if self.iteration % self.cfg.log_every == 0:
                self.step.take_metrics()


def operations_per_iteration(loop: ConfigLoop, device: torch.device) -> float | None:
    """GPU operations (kernels, copies, fills) of one eager iteration, averaged over an ``n_critic`` cycle."""
    if device.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    loop.run(loop.cfg.n_critic)  # warm
    torch.cuda.synchronize(device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        loop.run(loop.cfg.n_critic)
        torch.cuda.synchronize(device)
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    return len(kernels) / loop.cfg.n_critic


def timing(
    name: str, cfg: TrainConfig, images_u8: torch.Tensor, labels: torch.Tensor, device: torch.device,
    rounds: int, iters: int,
) -> tuple[dict[str, float], list[str]]:  # fmt: skip
    """Check 2 for one configuration: median ms/it of each loop, and the report lines."""
    prepare = load_section("prepare")
    images = normalize(images_u8, prepare.mean, prepare.std)
    loops: dict[str, Any] = {}
    if name == "tutorial":
        transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize([prepare.mean], [prepare.std])])
        loops["reference"] = TutorialLoop(cfg, PilDataset(images_u8, transform), device)
    fp32, bf16 = dataclasses.replace(cfg, precision="fp32"), dataclasses.replace(cfg, precision="bf16")
    loops["eager fp32"] = ConfigLoop(fp32, images, labels, device, graphs=False)
    loops["graphs fp32"] = ConfigLoop(fp32, images, labels, device, graphs=True)
    loops["graphs bf16"] = ConfigLoop(bf16, images, labels, device, graphs=True)
    operations = operations_per_iteration(loops["eager fp32"], device)
    times = interleaved(loops, rounds, iters, device)
    medians = {loop: statistics.median(t) for loop, t in times.items()}
    per_run = cfg.epochs * (MNIST_TRAIN_SIZE // cfg.batch_size)
    lines = [
        f"| {name} | {loop} | {min(times[loop]):.3f} | {ms:.3f} | {per_run * ms / 1000:.0f} s |"
        for loop, ms in medians.items()
    ]
    if operations is not None:
        floor = operations * KERNEL_US / 1000
        lines.append(f"| {name} | GPU operations per eager iteration: {operations:.0f} | | {floor:.3f} (floor) | |")
    return medians, lines


def load_images() -> tuple[torch.Tensor, torch.Tensor, str]:
    """The prepared MNIST training images (uint8) and labels, or random ones when they are not there."""
    if PREPARED.is_file():
        data = torch_load_safe(PREPARED, "prepared data", "rebuild it with `dvc repro prepare`")
        return data["images"], data["labels"].to(torch.int64), str(PREPARED)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6400, 1, 28, 28), dtype=torch.uint8, generator=g)
    return images, torch.randint(0, 10, (6400,), generator=g), "random images (no MNIST)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="device to check against the CPU (default cuda)")
    parser.add_argument("--configs", default=",".join(CONFIGURATIONS), help="configurations, comma-separated")
    parser.add_argument("--steps", type=int, default=50, help="iterations compared (default 50)")
    parser.add_argument("--tol", type=float, default=0.05, help="cpu vs device tolerance, share of max |loss|")
    parser.add_argument("--graph-tol", type=float, default=1e-4, help="eager vs graphs tolerance, share of max |loss|")
    parser.add_argument("--rounds", type=int, default=4, help="timed rounds (default 4)")
    parser.add_argument("--iters", type=int, default=300, help="iterations per timed round (default 300)")
    gpu_stages.add_arguments(parser)
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    base: TrainConfig = load_section("train")
    images_u8, labels, source = load_images()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"torch {torch.__version__} on {name}; data: {source}; {load_text()}", flush=True)
    prepare = load_section("prepare")
    ok, verdicts, table, medians = True, [], [], {}
    for config in args.configs.split(","):
        cfg = configuration(base, config)
        start = time.perf_counter()
        agree, lines = check_agreement(
            cfg, normalize(images_u8, prepare.mean, prepare.std), labels, device, args.steps, args.tol, args.graph_tol
        )
        ok = ok and agree
        verdicts += [f"{config}: {line}" for line in lines]
        print("\n".join(verdicts[-2:]) + f" ({time.perf_counter() - start:.1f} s)", flush=True)
        medians[config], rows = timing(config, cfg, images_u8, labels, device, args.rounds, args.iters)
        table += rows
    stage_ok, stage_lines = gpu_stages.run_checks(args, base, device, medians, configuration)
    ok = ok and stage_ok
    print(f"\n== summary: {'PASS' if ok else 'FAIL'} ({name}, torch {torch.__version__}; {load_text()})")
    print("\n".join(verdicts))
    print("| configuration | loop | best ms/it | median ms/it | projected training |\n|---|---|---|---|---|")
    print("\n".join(table))
    for config, m in medians.items():
        if "graphs fp32" in m and "graphs bf16" in m:
            print(f"{config}: graphs bf16 / graphs fp32 (TF32) time {m['graphs bf16'] / m['graphs fp32']:.2f}x")
    print("\n".join(stage_lines))
    if device.type == "cuda":
        print(f"peak CUDA memory allocated: {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
