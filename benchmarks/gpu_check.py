"""GPU readiness check in one run: the device's first steps agree with the CPU's, then the timing table.

    python benchmarks/gpu_check.py [--device cuda] [--steps 50] [--rounds 4] [--iters 300]

Run from the project root (it reads ``params.yaml``; real MNIST from ``data/prepared/train.pt`` when present, else
random images). ``benchmarks/gpu_check.sh`` sets up Python and calls this. Checks, each on ``--steps`` iterations
of ``WGANStep`` over the same real batches:

1. ``cpu`` vs ``<device> eager``: both draw their noise from one CPU stream (moved to the device), so they do the
   same arithmetic; per-step critic and generator losses must agree within ``--tol`` of the largest |loss|
   (TF32 matmuls on CUDA round to 10-bit mantissas, so this is loose).
2. ``<device> eager`` vs ``<device> fast`` (the default path: CUDA graphs for the clipping loss), both with the
   same device noise stream: must agree within ``--graph-tol`` (same kernels; 0 difference expected).

Then the reference (tutorial) loop and the project's loop are timed on the device, interleaved, and the table
gives ms/iteration, speed-up and the projected wall time of ``train.epochs`` epochs of MNIST (60000 images).

3. With several GPUs visible (and ``data/prepared`` carried): the train stage as 1 process against one process
   per GPU (torchrun, NCCL; ``bench_nproc.compare``): weights within ``--tol``, and the speed of each.
Exit status 1 when a check fails. With ``--device cpu`` every check runs on the CPU (a self-test of this script).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time

import torch
from bench_nproc import PREPARED as PREPARED_DIR
from bench_nproc import compare as compare_process_counts
from bench_train import PREPARED, PilDataset, ProjectLoop, TutorialLoop, interleaved, load_text, report
from torchvision import transforms

from wgan.config import TrainConfig, load_section
from wgan.data.prepared import normalize
from wgan.fileio import torch_load_safe
from wgan.models.networks import build_models
from wgan.training.batches import derive_seed
from wgan.training.cuda_graphs import make_step

MNIST_TRAIN_SIZE = 60000


def losses_per_step(
    cfg: TrainConfig, batches: list[torch.Tensor], device: torch.device, noise: torch.Generator, graphs: bool | None
) -> torch.Tensor:
    """[steps, 2]: each iteration's critic loss and generator loss (NaN where no generator step ran)."""
    generator, critic = build_models(cfg, device)
    step = make_step(cfg, generator, critic, noise, graphs=graphs)
    rows = []
    for i, real in enumerate(batches):
        step(real.to(device), i)
        metrics = step.take_metrics()  # one host sync per step: fine for a check
        rows.append([metrics["train/critic_loss"], metrics.get("train/generator_loss", float("nan"))])
    return torch.tensor(rows, dtype=torch.float64)


def compare(name: str, a: torch.Tensor, b: torch.Tensor, tol: float) -> bool:
    """Whether ``a`` and ``b`` agree within ``tol`` of the largest |value| of ``a``; prints the verdict."""
    seen = ~torch.isnan(a)
    if not torch.equal(seen, ~torch.isnan(b)):
        print(f"MISMATCH {name}: generator steps ran on different iterations")
        return False
    scale = a[seen].abs().max().item()
    worst = (a[seen] - b[seen]).abs().max().item()
    ok = worst <= tol * scale
    print(f"{'match' if ok else 'MISMATCH'} {name}: max |difference| {worst:.3g} (limit {tol:g} x {scale:.3g})")
    return ok


def check_agreement(
    cfg: TrainConfig, images: torch.Tensor, device: torch.device, steps: int, tol: float, graph_tol: float
) -> bool:
    """Checks 1 and 2 of the module docstring."""
    pick = torch.Generator().manual_seed(derive_seed(cfg.seed, "shuffle"))
    order = torch.randperm(len(images), generator=pick)
    batches = [images[order[i * cfg.batch_size : (i + 1) * cfg.batch_size]] for i in range(steps)]
    seed = derive_seed(cfg.seed, "noise")
    cpu = losses_per_step(cfg, batches, torch.device("cpu"), torch.Generator().manual_seed(seed), graphs=False)
    eager_cpu_noise = losses_per_step(cfg, batches, device, torch.Generator().manual_seed(seed), graphs=False)

    def device_noise() -> torch.Generator:
        return torch.Generator(device).manual_seed(seed)

    eager = losses_per_step(cfg, batches, device, device_noise(), graphs=False)
    fast = losses_per_step(cfg, batches, device, device_noise(), graphs=None)
    print(f"first losses: critic {cpu[0, 0].item():.6g} (cpu), generator {cpu[0, 1].item():.6g} (cpu)")
    return all(
        [
            compare(f"cpu vs {device} eager, {steps} steps", cpu, eager_cpu_noise, tol),
            compare(f"{device} eager vs {device} fast path, {steps} steps", eager, fast, graph_tol),
        ]
    )


def load_images() -> tuple[torch.Tensor, str]:
    """The prepared MNIST training images (uint8), or random ones when they are not there."""
    if PREPARED.is_file():
        return torch_load_safe(PREPARED, "prepared data", "rebuild it with `dvc repro prepare`")["images"], str(
            PREPARED
        )
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (6400, 1, 28, 28), dtype=torch.uint8, generator=g), "random images (no MNIST)"


def timing_table(
    cfg: TrainConfig, images_u8: torch.Tensor, device: torch.device, rounds: int, iters: int, precisions: list[str]
) -> list[str]:
    """The reference and project loops timed on ``device``, with the projected wall time of a full run."""
    prepare = load_section("prepare")
    transform = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize(mean=[prepare.mean], std=[prepare.std])]
    )
    images = normalize(images_u8, prepare.mean, prepare.std)
    loops: dict[str, TutorialLoop | ProjectLoop] = {
        "reference": TutorialLoop(cfg, PilDataset(images_u8, transform), device)
    }
    for precision in precisions:
        loops[f"project {precision}"] = ProjectLoop(dataclasses.replace(cfg, precision=precision), images, device)
    steps = sorted({type(loop.step).__name__ for loop in loops.values() if isinstance(loop, ProjectLoop)})
    times = interleaved(loops, rounds, iters, device)
    del loops
    per_run = cfg.epochs * (MNIST_TRAIN_SIZE // cfg.batch_size)
    rows = report(times)
    rows.append(f"project loops: {', '.join(steps)} (the train stage's step for this train section on {device})")
    rows.append("")
    rows.append(f"projected {cfg.epochs} epochs ({per_run} iterations), from the median ms/it:")
    rows += [f"  {name}: {per_run * statistics.median(t) / 1000 / 60:.1f} min" for name, t in times.items()]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="device to check against the CPU (default cuda)")
    parser.add_argument("--steps", type=int, default=50, help="iterations compared (default 50)")
    parser.add_argument("--tol", type=float, default=0.05, help="check 1 tolerance, share of max |loss|")
    parser.add_argument("--graph-tol", type=float, default=1e-4, help="check 2 tolerance, share of max |loss|")
    parser.add_argument("--rounds", type=int, default=4, help="timed rounds (default 4)")
    parser.add_argument("--iters", type=int, default=300, help="iterations per timed round (default 300)")
    parser.add_argument("--precisions", default="fp32,bf16", help="project loops to time (default fp32,bf16)")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    cfg: TrainConfig = load_section("train")
    prepare = load_section("prepare")
    images_u8, source = load_images()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"torch {torch.__version__} on {name}; data: {source}; {load_text()}")
    start = time.perf_counter()
    ok = check_agreement(
        dataclasses.replace(cfg, precision="fp32"),
        normalize(images_u8, prepare.mean, prepare.std),
        device,
        args.steps,
        args.tol,
        args.graph_tol,
    )
    print(f"agreement checks: {'PASS' if ok else 'FAIL'} ({time.perf_counter() - start:.1f} s)", flush=True)
    rows = timing_table(cfg, images_u8, device, args.rounds, args.iters, args.precisions.split(","))
    print("\n".join(rows))
    if device.type == "cuda":
        print(f"peak CUDA memory allocated: {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB")
        ok = multi_gpu_check(args.iters, args.tol) and ok
    return 0 if ok else 1


def multi_gpu_check(iters: int, tol: float) -> bool:
    """Check 3: the train stage on 1 GPU against one process per visible GPU (skipped with fewer than 2)."""
    count = torch.cuda.device_count()
    if count < 2:
        print("1 vs all GPUs: skipped, one GPU visible")
        return True
    if not all((PREPARED_DIR / name).is_file() for name in ("train.pt", "test.pt")):
        print(f"1 vs {count} GPUs: skipped, carry data/prepared/train.pt and test.pt to run it")
        return True
    ok, lines = compare_process_counts(count, rounds=2, iters=iters, tol=tol)
    print("\n".join(lines))
    return ok


if __name__ == "__main__":
    sys.exit(main())
