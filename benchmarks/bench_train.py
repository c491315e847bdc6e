"""Time one critic iteration: the tutorial's loop vs this project's training step, interleaved in one process.

(a) reference, written the tutorial's way: a torchvision MNIST dataset (``data/raw``) with ToTensor + Normalize
    per sample, or, without the raw files, an equivalent Dataset over the prepared uint8 tensor (PIL
    ``Image.fromarray`` + ToTensor + Normalize per sample); a shuffling DataLoader with 2 workers; ``.detach()``ed
    fakes; two critic forwards; a per-parameter clamp loop; the loss formatted (a host sync) every generator step.
    Only the tutorial's generator-loss bug is fixed: its gradients flow through D into G.
(b) this project: ``training.batches.epoch_batches`` + the step ``training.cuda_graphs.make_step`` gives the train stage
    (``WGANStep``; on CUDA its graphed form where that works), i.e. the real training code, once per precision asked
    for (``train.precision`` fp32 and bf16 by default).

Same models (the train section of params.yaml), batch size, device and thread count. Rounds alternate the order
of the loops (a, b, c, then c, b, a, ...) after one untimed warm-up round of each, so drift in machine load hits
all alike. Prints best-of-rounds (least disturbed by other load) and median, the load average, peak RSS (CPU)
and peak allocated memory (CUDA).

With ``--ema-decay D`` a third kind of loop joins the rounds, the first precision with ``train.ema_decay = D``
(the averaged generator, ``wgan.training.ema``), and the averaging's own cost is timed beside it as a share of the step:
its update (once per generator step) and the BatchNorm recompute (once per snapshot).

    python benchmarks/bench_train.py [--rounds 6] [--iters 300] [--threads N] [--precisions fp32,bf16] [--ema-decay D]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets, transforms

from wgan.config import TrainConfig, load_section
from wgan.data.prepared import normalize
from wgan.device import choose_device
from wgan.fileio import torch_load_safe
from wgan.models.networks import build_models
from wgan.training.batches import derive_seed, epoch_batches
from wgan.training.cuda_graphs import make_step

RAW_ROOT = Path("data/raw")
PREPARED = Path("data/prepared/train.pt")


class PilDataset(Dataset):
    """What torchvision's MNIST does per sample, over a uint8 tensor: PIL image, then the transform."""

    def __init__(self, images_u8: torch.Tensor, transform: transforms.Compose) -> None:
        self.images = images_u8[:, 0].numpy()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[index], mode="L")), 0


def load_data(mean: float, std: float) -> tuple[Dataset, torch.Tensor, str]:
    """The reference dataset, the uint8 images behind it and a description of the source."""
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean=[mean], std=[std])])
    try:
        mnist = datasets.MNIST(root=str(RAW_ROOT), train=True, download=False, transform=transform)
        return mnist, mnist.data.unsqueeze(1), f"torchvision MNIST({RAW_ROOT})"
    except RuntimeError:
        raw = torch_load_safe(PREPARED, "prepared data", "run `dvc repro prepare` first")
        images = raw["images"]
        return PilDataset(images, transform), images, f"PIL dataset over {PREPARED}"


class TutorialLoop:
    """The tutorial's training loop, resumable in chunks of iterations (its DataLoader iterator is kept)."""

    def __init__(self, cfg: TrainConfig, dataset: Dataset, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.generator, self.critic = build_models(cfg, device)
        self.opt_g = torch.optim.RMSprop(self.generator.parameters(), lr=cfg.lr)
        self.opt_d = torch.optim.RMSprop(self.critic.parameters(), lr=cfg.lr)
        self.loader = DataLoader(dataset, batch_size=cfg.batch_size, num_workers=2, shuffle=True)
        self.batches = enumerate(self.loader)

    def run(self, iterations: int) -> None:
        G, D, cfg = self.generator, self.critic, self.cfg  # noqa: N806 (the tutorial's names)
        for _ in range(iterations):
            try:
                i, (real_imgs, _) = next(self.batches)
            except StopIteration:  # a new epoch: the tutorial's `for epoch ...: for i, ... in enumerate(loader)`
                self.batches = enumerate(self.loader)
                i, (real_imgs, _) = next(self.batches)
            real_imgs = real_imgs.to(self.device)
            z = torch.normal(0, 1, size=(real_imgs.shape[0], cfg.latent_dim), device=self.device)
            fake_imgs = G(z).detach()
            dis_loss = -torch.mean(D(real_imgs)) + torch.mean(D(fake_imgs))
            self.opt_d.zero_grad()
            dis_loss.backward()
            self.opt_d.step()
            for p in D.parameters():
                p.data.clamp_(-cfg.clip_value, cfg.clip_value)
            if i % cfg.n_critic == 0:
                gen_imgs = G(z)  # the fix: no .detach(), so the generator loss reaches G
                self.opt_g.zero_grad()
                gen_loss = -torch.mean(D(gen_imgs))
                gen_loss.backward()
                self.opt_g.step()
                _ = f"{gen_loss:.8f} {dis_loss:.8f}"  # the tutorial's set_postfix: a host sync per G step


class ProjectLoop:
    """This project's training: on-device batches by index and the train stage's step, metrics read every log_every."""

    def __init__(self, cfg: TrainConfig, images: torch.Tensor, device: torch.device) -> None:
        self.cfg = cfg
        generator, critic = build_models(cfg, device)
        self.images = images.to(device)
        self.shuffle = torch.Generator(device).manual_seed(derive_seed(cfg.seed, "shuffle"))
        # the step the train stage takes: CUDA graphs where they work (GraphedStep), else eager (WGANStep)
        self.step = make_step(
            cfg, generator, critic, torch.Generator(device).manual_seed(derive_seed(cfg.seed, "noise"))
        )
        self.batches = epoch_batches(self.images, cfg.batch_size, self.shuffle)
        self.iteration = 0

    def run(self, iterations: int) -> None:
        for _ in range(iterations):
            batch = next(self.batches, None)
            if batch is None:
                self.batches = epoch_batches(self.images, self.cfg.batch_size, self.shuffle)
                batch = next(self.batches)
            self.step(batch[0], self.iteration)  # (images, labels): the tutorial's model takes no labels
            self.iteration += 1
            if self.iteration % self.cfg.log_every == 0:
                self.step.take_metrics()


def timed(loop: TutorialLoop | ProjectLoop, iterations: int, device: torch.device) -> float:
    """Milliseconds per iteration of ``iterations`` iterations."""
    start = time.perf_counter()
    loop.run(iterations)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) * 1000 / iterations


def interleaved(
    loops: dict[str, TutorialLoop | ProjectLoop], rounds: int, iters: int, device: torch.device
) -> dict[str, list[float]]:
    """ms/iteration of each loop in each round, after one untimed warm-up round; the order flips every round."""
    for loop in loops.values():
        timed(loop, iters, device)  # warm-up: workers, allocator, CUDA graph capture, first-call costs
    times: dict[str, list[float]] = {name: [] for name in loops}
    names = list(loops)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            times[name].append(timed(loops[name], iters, device))
        print(f"round {r + 1}: " + ", ".join(f"{n} {t[-1]:.2f} ms/it" for n, t in times.items()), flush=True)
    return times


def report(times: dict[str, list[float]], baseline: str = "reference") -> list[str]:
    """A markdown table: best and median ms/iteration of each loop and its speed-up over ``baseline``."""
    rows = ["| loop | best ms/it | median ms/it | speed-up (best) | speed-up (median) |", "|---|---|---|---|---|"]
    base_best, base_median = min(times[baseline]), statistics.median(times[baseline])
    for name, t in times.items():
        best, median = min(t), statistics.median(t)
        rows.append(f"| {name} | {best:.2f} | {median:.2f} | {base_best / best:.2f}x | {base_median / median:.2f}x |")
    return rows


def _best_ms(fn: Callable[[], object], reps: int, rounds: int = 5) -> float:
    """Best over ``rounds`` of the mean milliseconds of ``reps`` calls."""
    best = math.inf
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - start) * 1000 / reps)
    return best


def averaging_cost(loop: ProjectLoop, step_ms: float) -> str:
    """The averaged generator's cost against ``step_ms`` (ms per iteration of the same loop, averaging included)."""
    ema, cfg = loop.step.ema, loop.cfg
    assert ema is not None

    def recompute() -> None:
        ema._stale = True  # what an update does: the next use recomputes the statistics
        ema.ready(loop.step.autocast)

    def update() -> None:
        ema.update(loop.iteration)  # a moving update (ema_start 0: every iteration is past the start)

    update_ms, batchnorm_ms = _best_ms(update, 200), _best_ms(recompute, 3)
    return (
        f"averaged generator (ema_decay {cfg.ema_decay}): update {update_ms:.3f} ms per generator step, "
        f"{100 * update_ms / cfg.n_critic / step_ms:.2f}% of a {step_ms:.2f} ms iteration (n_critic {cfg.n_critic}); "
        f"BatchNorm recompute {batchnorm_ms:.1f} ms per snapshot, "
        f"{100 * batchnorm_ms / cfg.sample_interval / step_ms:.2f}% (sample_interval {cfg.sample_interval})"
    )


def load_text() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} CPUs)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6, help="timed rounds of each loop (default 6)")
    parser.add_argument("--iters", type=int, default=300, help="iterations per round (default 300)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--precisions", default="fp32,bf16", help="train.precision values of the project loop")
    parser.add_argument("--ema-decay", type=float, default=0.0, help="also time train.ema_decay = D (default: off)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg: TrainConfig = load_section("train")
    prepare = load_section("prepare")
    device = choose_device()
    dataset, images_u8, source = load_data(prepare.mean, prepare.std)
    images = normalize(images_u8, prepare.mean, prepare.std)
    print(
        f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, batch {cfg.batch_size}, "
        f"loss {cfg.loss}, n_critic {cfg.n_critic}, reference data: {source} ({len(images)} images); {load_text()}"
    )
    if device.type == "cpu" and "bf16" in args.precisions and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        print("note: this CPU has no native bf16 matmul (no AVX512-BF16/AMX): bf16 runs on a slow fallback")
    loops: dict[str, TutorialLoop | ProjectLoop] = {"reference": TutorialLoop(cfg, dataset, device)}
    for precision in args.precisions.split(","):
        loops[f"project {precision}"] = ProjectLoop(dataclasses.replace(cfg, precision=precision), images, device)
    first = args.precisions.split(",")[0]
    averaged = f"project {first} averaged"
    if args.ema_decay:
        ema_cfg = dataclasses.replace(cfg, precision=first, ema_decay=args.ema_decay)
        loops[averaged] = ProjectLoop(ema_cfg, images, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = interleaved(loops, args.rounds, args.iters, device)
    if args.ema_decay:
        print(averaging_cost(loops[averaged], statistics.median(times[averaged])))  # type: ignore[arg-type]
    del loops  # shuts the DataLoader workers down, so their peak RSS is counted below
    print(f"{load_text()}; best and median of {args.rounds} rounds of {args.iters} iterations:")
    print("\n".join(report(times)))
    self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak RSS: main process {self_mb:.0f} MiB, largest DataLoader worker {child_mb:.0f} MiB")
    if device.type == "cuda":
        print(f"peak CUDA memory allocated: {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
