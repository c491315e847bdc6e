"""The training loop: load the data, build the models, then iterate the WGAN step, logging, sampling, checkpointing.

The algorithm is ``step`` (one iteration) over ``losses`` (the math); this module orchestrates it.
Around the step, at completed-iteration counts:

* every ``log_every`` iterations: read the metric sums (the only host sync), add the held-out Wasserstein
  estimate, check that everything is finite, log to DVCLive (``wgan.training.monitor``);
* every ``sample_interval`` iterations: the fixed latent vectors through the generator (``wgan.data.samples``);
* at the end of every ``checkpoint_every``-th epoch, and at the next iteration after SIGINT (Ctrl-C) or
  SIGTERM, which then stop the run: a resumable checkpoint (``wgan.training.checkpoint``).

Logging, sampling and the held-out estimate never touch a random stream or a training statistic (the generator
runs in eval mode for them), so ``log_every`` and ``sample_interval`` do not change the weights. A NaN or
infinite loss stops the run with a ``UserError`` naming the iteration, at most ``log_every`` iterations late
(the sums turn non-finite), and the last good checkpoint stays. A run is finished only once its outputs are
written (``deliver``): the end state is first checkpointed as unfinished, so a kill while the outputs are
written resumes at the end and only writes them. A finished checkpoint stays on disk (a DVC output), and a rerun
with it present trains from scratch, so a forced rerun really retrains.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import torch

from wgan.config import TrainConfig
from wgan.data.model_file import cpu_state
from wgan.data.prepared import IMAGE_SHAPE, N_CLASSES, Split, load_prepared, to_uint8
from wgan.data.samples import Samples
from wgan.device import choose_device
from wgan.errors import UserError, one_line
from wgan.models.conditional import build_conditional_models, digit_rows, label_args
from wgan.models.networks import Critic, Generator, build_models
from wgan.paths import TrainPaths, rerun
from wgan.progress import bf16_warning, divergence_fix, model_summary, progress
from wgan.stage import StageInterrupted, StopSignals, signal_name
from wgan.training import losses
from wgan.training.batches import derive_seed, draw_fake_labels, epoch_batches
from wgan.training.checkpoint import (
    first_nonfinite,
    load_checkpoint,
    rng_states,
    run_fingerprint,
    save_checkpoint,
    set_rng_states,
)
from wgan.training.distributed import World, use_global_batchnorm
from wgan.training.live import M_HELDOUT, M_RATE, Live, Rate
from wgan.training.step import M_CRITIC, M_GENERATOR, M_WASSERSTEIN, make_step

BAR_FIELDS = (("D", M_CRITIC), ("G", M_GENERATOR), ("W", M_WASSERSTEIN))  # the progress bar's metrics


@dataclass
class TrainResult:
    """What a finished run hands to the stage to write: the models (train mode, on their device) and samples."""

    generator: Generator
    critic: Critic
    samples: Samples
    metrics: dict[str, float]
    iterations: int


def train(
    cfg: TrainConfig,
    paths: TrainPaths | None = None,
    device: torch.device | None = None,
    rank: int = 0,
    world_size: int = 1,
    log: Callable[[str], None] = print,
    norm: tuple[float, float] | None = None,
    deliver: Callable[[TrainResult], None] | None = None,
) -> TrainResult:
    """Train (or resume) a WGAN as ``cfg`` says; write the checkpoint and ``dvclive/`` on the way.

    ``rank``/``world_size`` (inside a process group, ``wgan.training.distributed``): each rank trains on its share of
    every batch, and only rank 0 writes files. ``norm`` (prepare's
    mean, std), when given, must be the data's normalization: a stale prepared file is then an error instead
    of a silently different run. ``deliver`` (rank 0 only) writes the outputs; the checkpoint is marked
    finished after it returns. Raises ``UserError`` when the losses turn NaN or infinite and
    ``StageInterrupted`` after a SIGINT/SIGTERM (once the resumable checkpoint is written).
    """
    run = Run(cfg, paths or TrainPaths(), device or choose_device(), rank, world_size, log, norm)
    return run.loop(deliver)


class Run:
    """One run's state: models, step, random streams, position, samples and the logger, shared by the loop."""

    def __init__(
        self,
        cfg: TrainConfig,
        paths: TrainPaths,
        device: torch.device,
        rank: int,
        world_size: int,
        log: Callable[[str], None],
        norm: tuple[float, float] | None,
    ) -> None:
        self.cfg, self.paths, self.device, self.rank, self.world_size = cfg, paths, device, rank, world_size
        self.world = World(rank, world_size)
        self.is_main = self.world.is_main
        self.log = log if self.is_main else lambda _: None
        train_split, test_split = _load_splits(paths, norm)
        self.norm = (train_split.mean, train_split.std)
        n = len(train_split)
        if cfg.batch_size > n:
            raise UserError(
                f"train.batch_size = {cfg.batch_size} is larger than the training split ({n} images); lower it"
            )
        if cfg.batch_size % world_size:
            raise UserError(f"train.batch_size = {cfg.batch_size} is not divisible by the {world_size} processes")
        if cfg.conditional and cfg.n_fixed < N_CLASSES:
            raise UserError(
                f"train.n_fixed = {cfg.n_fixed} is too small for a conditional run: its snapshots show each of the "
                f"{N_CLASSES} digits; raise it to at least {N_CLASSES}"
            )
        self.per_epoch = n // cfg.batch_size
        epochs_total = cfg.epochs * self.per_epoch
        self.total = epochs_total if cfg.max_iterations == 0 else min(cfg.max_iterations, epochs_total)
        self.fingerprint = run_fingerprint(cfg, paths, device)
        self.world.check_same("the params, data or code of the run", self.fingerprint)

        self.generator, self.critic = (build_conditional_models if cfg.conditional else build_models)(cfg, device)
        self.log(f"device: {device}")
        warning = bf16_warning(device, cfg.precision)
        if warning:
            self.log(warning)
        self.log(model_summary(self.generator, (cfg.latent_dim,), "Generator"))
        self.log(model_summary(self.critic, IMAGE_SHAPE, "Critic"))
        self.shuffle = torch.Generator(device).manual_seed(derive_seed(cfg.seed, "shuffle"))
        self.noise = torch.Generator(device).manual_seed(derive_seed(cfg.seed, "noise"))
        if world_size > 1:
            use_global_batchnorm(self.generator, world_size)  # the global batch's statistics on every rank
            self.log(f"{world_size} training processes; rank 0 logs and writes the outputs")
            if device.type == "cuda":
                self.log("CUDA graphs are off under several processes: the gradient all-reduce is not recorded")
        self.step = make_step(
            cfg,
            self.generator,
            self.critic,
            self.noise,
            world=self.world,
            ema_start_iteration=cfg.ema_start * self.per_epoch,  # train.ema_start counts epochs
        )

        # fixed inputs for the snapshots and for the held-out Wasserstein estimate, from their own streams
        fixed = torch.Generator().manual_seed(derive_seed(cfg.seed, "fixed"))
        self.fixed_z = torch.randn(cfg.n_fixed, cfg.latent_dim, generator=fixed).to(device)
        self.fixed_labels: torch.Tensor | None = None
        if cfg.conditional:  # one row per digit, the same first n_fixed // 10 latents in every row
            per_digit = cfg.n_fixed // N_CLASSES
            self.fixed_z = self.fixed_z[:per_digit].repeat(N_CLASSES, 1)
            self.fixed_labels = digit_rows(per_digit).to(device)
        held = torch.Generator().manual_seed(derive_seed(cfg.seed, "heldout"))
        n_held = min(cfg.batch_size, len(test_split))
        held_index = torch.randperm(len(test_split), generator=held)[:n_held]
        self.held_real = test_split.images[held_index].to(device)
        self.held_z = torch.randn(n_held, cfg.latent_dim, generator=held).to(device)
        # a conditional critic scores the held-out images with their labels, the fakes with drawn digits
        self.held_labels: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)
        if cfg.conditional:
            self.held_labels = (test_split.labels[held_index].to(device), draw_fake_labels(held, n_held).to(device))
        self.images = train_split.images.to(device)
        self.labels = train_split.labels.to(device) if cfg.conditional else None

        self.iteration = 0
        self.samples = Samples(labels=None if self.fixed_labels is None else self.fixed_labels.cpu())
        history = self._resume()
        self.saved_at = self.iteration if history is not None else None  # the iteration of the checkpoint on disk
        self.saved_state: dict[str, Any] = {}  # what rank 0 saved last, marked finished once the outputs exist
        self.finite_at = self.iteration  # the last iteration at which the losses and the state were seen finite
        self.epoch_start = self.shuffle.get_state()  # the shuffle state at the start of the epoch in progress
        self.live = Live(paths.live_dir, history or []) if self.is_main else None
        self.rate = Rate(self.iteration)
        self.bar = progress(self.total, self.iteration, self.is_main)

    def _resume(self) -> list[dict[str, float]] | None:
        """Restore the state of a resumable checkpoint; its metric history, or None when starting afresh."""
        # rank 0's checkpoint on every rank: other machines have no copy of it
        found = load_checkpoint(self.paths.checkpoint, self.fingerprint, self.log) if self.is_main else None
        ckpt = self.world.from_main(found)
        if ckpt is None:
            return None
        try:  # its fingerprint matched, so only a damaged file fails here
            self.generator.load_state_dict(ckpt["generator"])
            self.critic.load_state_dict(ckpt["critic"])
            self.step.load_state_dict(ckpt["step"])
            set_rng_states(ckpt["rng"], self.device, self.shuffle, self.noise)
            self.samples = Samples.from_payload(ckpt["samples"], self.paths.checkpoint)
            self.iteration = int(ckpt["iteration"])
            history = list(ckpt["metrics"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as exc:
            raise UserError(
                f"checkpoint {self.paths.checkpoint} is damaged ({one_line(exc)}); delete it to train from scratch"
            ) from exc
        self.log(
            f"resuming from {self.paths.checkpoint}: {self.iteration // self.per_epoch} epochs "
            f"({self.iteration} iterations) done"
        )
        if self.iteration == self.total:
            self.log("training had finished before its outputs were written; writing them")
        return history

    def loop(self, deliver: Callable[[TrainResult], None] | None) -> TrainResult:
        cfg = self.cfg
        if self.iteration == 0:
            self.snapshot()
        try:
            with StopSignals() as stop:
                while self.iteration < self.total:
                    self.epoch_start = self.shuffle.get_state()
                    start = self.iteration % self.per_epoch
                    batches = epoch_batches(
                        self.images, cfg.batch_size, self.shuffle, self.rank, self.world_size, start, self.labels
                    )
                    for real, labels in itertools.islice(batches, self.total - self.iteration):
                        self.step(real, self.iteration, labels)  # the WGAN iteration: wgan.training.step
                        self.iteration += 1
                        self.bar.update()
                        if self.iteration % cfg.log_every == 0:
                            self.log_point()
                        if self.iteration % cfg.sample_interval == 0:
                            self.snapshot()
                        signum = self.world.stop_signal(stop.signum, self.iteration)  # alone: an attribute read
                        if signum is not None:
                            self.stop_here(signum)
                    epochs_done, mid_epoch = divmod(self.iteration, self.per_epoch)
                    if not mid_epoch and epochs_done % cfg.checkpoint_every == 0 and self.iteration < self.total:
                        self.checkpoint(finished=False)
                signum = self.world.stop_signal(stop.signum)  # a signal during the last epoch-end checkpoint
                if signum is not None:
                    self.stop_here(signum)
            if self.rate.iteration != self.iteration:  # not logged at this very iteration (in the loop or before)
                self.log_point()
            if self.samples.iteration[-1] != self.iteration:
                self.snapshot()
            # with outputs still to write, a kill from here on resumes at the end and only writes them
            self.checkpoint(finished=deliver is None)
        finally:
            self.bar.close()
        if self.live is not None:
            self.live.end()
        result = TrainResult(  # with train.ema_decay > 0 the averaged generator; the checkpoint keeps the live one
            self.sampler(), self.critic, self.samples, self.live.latest() if self.live else {}, self.iteration
        )
        if self.is_main and deliver is not None:
            deliver(result)
            save_checkpoint({**self.saved_state, "finished": True}, self.paths.checkpoint)
        return result

    def epoch_of(self, iteration: int) -> int:
        """The 0-based epoch that ``iteration`` (a count of completed iterations) finished in."""
        return max(iteration - 1, 0) // self.per_epoch

    def sampler(self) -> Generator:
        """The generator that samples: the averaged one when train.ema_decay > 0 (training.ema), else the live one."""
        ema = self.step.ema
        return self.generator if ema is None else ema.ready(self.step.autocast)

    def snapshot(self) -> None:
        """The fixed latent vectors through the sampling generator in eval mode, kept as uint8 pixels."""
        generator = self.sampler()
        with _eval_mode(generator), torch.no_grad(), self.step.autocast():
            images = generator(self.fixed_z, *label_args(self.fixed_labels))
        self.samples.append(to_uint8(images.float().cpu(), *self.norm), self.epoch_of(self.iteration), self.iteration)

    def log_point(self) -> None:
        """Read the metric sums, add the held-out estimate and the rate, stop on a NaN, log."""
        values = self.step.take_metrics()
        with _eval_mode(self.generator), torch.no_grad(), self.step.autocast():
            real_labels, fake_labels = self.held_labels
            d_real = self.critic(self.held_real, *label_args(real_labels))
            d_fake = self.critic(self.generator(self.held_z, *label_args(fake_labels)), *label_args(fake_labels))
            values[M_HELDOUT] = losses.wasserstein_estimate(d_real, d_fake).item()
        for name, value in values.items():  # a NaN or inf anywhere since the last read stays in the sums
            if not math.isfinite(value):
                self.diverged(f"{name} = {value}")
        self.finite_at = self.iteration
        values[M_RATE] = self.rate(self.iteration)
        if self.live is not None:
            self.live.log(self.iteration, values)
        shown = {key: f"{values[name]:.4g}" for key, name in BAR_FIELDS if name in values}
        self.bar.set_postfix(epoch=self.epoch_of(self.iteration), **shown, refresh=False)

    def checkpoint(self, finished: bool) -> None:
        """Rank 0 saves the exact position (a non-finite state is refused: the last good checkpoint stays).

        Every rank builds the state (the step's metric sums are reduced over ranks) and checks it, so all
        ranks stop together on a non-finite one.
        """
        # the shuffle state that redraws the permutation of the epoch the next iteration belongs to
        at_epoch_end = self.iteration % self.per_epoch == 0
        state: dict[str, Any] = {
            "fingerprint": self.fingerprint,
            "finished": finished,
            "epochs_done": self.iteration // self.per_epoch,
            "iteration": self.iteration,
            "generator": cpu_state(self.generator),
            "critic": cpu_state(self.critic),
            "step": self.step.state_dict(),
            "rng": rng_states(self.device, self.shuffle.get_state() if at_epoch_end else self.epoch_start, self.noise),
            "samples": self.samples.to_payload(),
            "metrics": self.live.history if self.live is not None else [],
        }
        try:
            if self.is_main:
                save_checkpoint(state, self.paths.checkpoint)
                self.saved_state = state
            elif (bad := first_nonfinite(state)) is not None:
                raise ValueError(bad)
        except ValueError as exc:
            self.diverged(f"the training state has a NaN or infinity in {exc}")
        self.saved_at = self.finite_at = self.iteration

    def stop_here(self, signum: int) -> NoReturn:
        self.checkpoint(finished=False)
        raise StageInterrupted(
            signum,
            f"stopped by {signal_name(signum)} at iteration {self.iteration} of {self.total}; "
            f"{self.paths.checkpoint} is saved: run `dvc repro train` (or this stage) again to resume",
        )

    def diverged(self, what: str) -> NoReturn:
        where = self.paths.checkpoint
        kept = f"{where} (iteration {self.saved_at}) is kept" if self.saved_at is not None else "no checkpoint saved"
        raise UserError(
            f"training diverged: {what} at iteration {self.iteration} (finite at iteration {self.finite_at}, checked "
            f"every train.log_every = {self.cfg.log_every} iterations); {divergence_fix(self.cfg)}; {kept}"
        )


def _load_splits(paths: TrainPaths, norm: tuple[float, float] | None) -> tuple[Split, Split]:
    mean, std = norm if norm is not None else (None, None)
    train_split = load_prepared(paths.train_data, mean, std)
    test_split = load_prepared(paths.test_data, mean, std)
    if not (math.isclose(train_split.mean, test_split.mean) and math.isclose(train_split.std, test_split.std)):
        raise UserError(
            f"{paths.train_data} and {paths.test_data} were prepared with different normalizations; {rerun('prepare')}"
        )
    if len(test_split) == 0:
        raise UserError(f"{paths.test_data} holds no images; {rerun('prepare')}")
    return train_split, test_split


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Run ``model`` in eval mode inside the block (BatchNorm uses and keeps its running statistics)."""
    model.eval()
    try:
        yield
    finally:
        model.train()
