"""The training loop: load the data, build the models, then iterate the WGAN step, logging, sampling, checkpointing.

The algorithm is ``step`` (one iteration) over ``losses`` (the math); this module orchestrates it.
Around the step, at completed-iteration counts:

* every ``log_every`` iterations: read the metric sums (the only host sync), add the held-out Wasserstein
  estimate, check that everything is finite, log to DVCLive (``training.live``);
* every ``sample_interval`` iterations: the fixed latent vectors through the generator (``wgan.data.samples``);
* at the end of every ``keep_every``-th epoch and at the end of the run: the sampling generator into the run
  state's kept folder (``wgan.training.keep``), delivered to ``models/kept/`` for the quality stage;
* at the end of every ``checkpoint_every``-th epoch, every ``checkpoint_minutes`` (mid-epoch too), and at the
  next iteration after SIGINT (Ctrl-C) or SIGTERM, which then stop the run: a resumable checkpoint
  (``wgan.training.checkpoint``).

Logging, sampling, keeping and the held-out estimate never touch a random stream or a training statistic (the
generator runs in eval mode for them), so ``log_every``, ``sample_interval`` and ``keep_every`` do not change the
weights. A NaN or
infinite loss stops the run with a ``UserError`` naming the iteration, at most ``log_every`` iterations late
(the sums turn non-finite), and the last good checkpoint stays.

The checkpoint, the kept generators and the DVCLive record are written into the run state (``wgan.paths``:
``.dvc/tmp/wgan/train/``, never a DVC output), and the stage's outputs appear only when the run delivers: the
kept generators and the curves are copied out, then the models written. So a failed or killed run leaves no
output of its own behind for `dvc checkout` to trip over, and nothing `dvc checkout` restores can break a resume.
A run is finished only once its outputs are written (``deliver``): the end state is first checkpointed as
unfinished, so a kill while the outputs are written resumes at the end and only writes them. A finished
checkpoint stays in the run state (its kept copies and curves are removed), and a rerun with it present trains
from scratch, so a forced rerun really retrains.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import torch

from wgan.config import TrainConfig
from wgan.data.kept import kept_epoch
from wgan.data.prepared import IMAGE_SHAPE, to_uint8
from wgan.data.samples import Samples
from wgan.device import choose_device
from wgan.errors import UserError
from wgan.fileio import copy_dir
from wgan.models.conditional import build_conditional_models, label_args
from wgan.models.networks import Critic, Generator, build_models
from wgan.paths import TrainPaths
from wgan.progress import bf16_warning, divergence_fix, model_summary, progress
from wgan.stage import StageInterrupted, StopSignals, signal_name
from wgan.training import losses
from wgan.training.batches import derive_seed, epoch_batches
from wgan.training.checkpoint import RunState, first_nonfinite, load_checkpoint, run_fingerprint, save_checkpoint
from wgan.training.cuda_graphs import make_step
from wgan.training.distributed import ALONE, World, use_global_batchnorm
from wgan.training.inputs import fixed_inputs, iterations_per_epoch, load_splits
from wgan.training.keep import keep, kept_mismatch, sync_kept
from wgan.training.live import M_HELDOUT, M_RATE, Live, Rate, run_record
from wgan.training.step import M_CRITIC, M_GENERATOR, M_WASSERSTEIN

BAR_FIELDS = (("D", M_CRITIC), ("G", M_GENERATOR), ("W", M_WASSERSTEIN))  # the progress bar's metrics


@dataclass
class TrainResult:
    """What a finished run hands to the stage to write: the models (train mode, on their device) and samples."""

    generator: Generator
    critic: Critic
    samples: Samples
    metrics: dict[str, float]
    iterations: int
    norm: tuple[float, float]  # the data's (mean, std), recorded in the generator's file (wgan.data.model_file)


def train(
    cfg: TrainConfig,
    paths: TrainPaths | None = None,
    device: torch.device | None = None,
    world: World = ALONE,
    log: Callable[[str], None] = print,
    norm: tuple[float, float] | None = None,
    deliver: Callable[[TrainResult], None] | None = None,
) -> TrainResult:
    """Train (or resume) a WGAN as ``cfg`` says; write the run state on the way, ``models/kept/`` and ``dvclive/`` at
    the end.

    ``world`` (the process group, ``wgan.training.distributed``): each rank trains on its share of every batch,
    and only rank 0 writes files. ``norm`` (prepare's mean, std), when given, must be the data's normalization:
    a stale prepared file is then an error instead of a silently different run. ``deliver`` (rank 0 only)
    writes the outputs; the checkpoint is marked finished after it returns. Raises ``UserError`` when the
    losses turn NaN or infinite and ``StageInterrupted`` after a SIGINT/SIGTERM (once the checkpoint is written).
    """
    return Run(cfg, paths or TrainPaths(), device or choose_device(), world, log, norm).loop(deliver)


class Run:
    """One run: its state (``checkpoint.RunState``), fixed inputs, data, and what it reports, shared by the loop."""

    def __init__(
        self,
        cfg: TrainConfig,
        paths: TrainPaths,
        device: torch.device,
        world: World,
        log: Callable[[str], None],
        norm: tuple[float, float] | None,
    ) -> None:
        self.cfg, self.paths, self.world = cfg, paths, world
        self.log = log if world.is_main else lambda _: None
        train_split, test_split = load_splits(paths, norm)
        self.norm = (train_split.mean, train_split.std)
        self.per_epoch = iterations_per_epoch(cfg, len(train_split), world)
        self.total = cfg.epochs * self.per_epoch
        self.total = self.total if cfg.max_iterations == 0 else min(cfg.max_iterations, self.total)
        self.fingerprint = run_fingerprint(cfg, paths, device)
        world.check_same("the params, data or code of the run", self.fingerprint)

        generator, critic = (build_conditional_models if cfg.conditional else build_models)(cfg, device)
        self._describe(generator, critic, device)
        shuffle = torch.Generator(device).manual_seed(derive_seed(cfg.seed, "shuffle"))
        noise = torch.Generator(device).manual_seed(derive_seed(cfg.seed, "noise"))
        if world.world_size > 1:
            use_global_batchnorm(generator, world.world_size)  # the global batch's statistics on every rank
        ema_start_iteration = cfg.ema_start * self.per_epoch  # train.ema_start counts epochs
        step = make_step(cfg, generator, critic, noise, world=world, ema_start_iteration=ema_start_iteration)
        self.fixed = fixed_inputs(cfg, test_split, device)
        self.images = train_split.images.to(device)
        self.labels = train_split.labels.to(device) if cfg.conditional else None
        samples = Samples(labels=None if self.fixed.labels is None else self.fixed.labels.cpu())
        self.state = RunState(generator, critic, step, shuffle, noise, samples, device)

        history = self._resume()
        if world.is_main:  # the kept generators of the checkpoint resumed, or none for a fresh run
            sync_kept(paths.kept_state, self.state.kept, history is not None, self.log)
        self.saved_at = self.state.iteration if history is not None else None  # the checkpoint on disk
        self.saved_time = time.monotonic()  # when it was saved (or the run started): train.checkpoint_minutes
        self.saved_state: dict[str, Any] = {}  # what rank 0 saved last, marked finished once the outputs exist
        self.finite_at = self.state.iteration  # the last iteration at which losses and state were seen finite
        record = run_record(device, cfg.precision)  # after make_step: it sets TF32 on CUDA
        self.live = Live(paths.live_state, history or [], record) if world.is_main else None
        self.rate = Rate(self.state.iteration)
        self.bar = progress(self.total, self.state.iteration, world.is_main)

    def _describe(self, generator: torch.nn.Module, critic: torch.nn.Module, device: torch.device) -> None:
        self.log(f"device: {device}")
        warning = bf16_warning(device, self.cfg.precision)
        if warning:
            self.log(warning)
        self.log(model_summary(generator, (self.cfg.latent_dim,), "Generator"))
        self.log(model_summary(critic, IMAGE_SHAPE, "Critic"))
        if self.world.world_size > 1:
            self.log(f"{self.world.world_size} training processes; rank 0 logs and writes the outputs")
            if device.type == "cuda":
                self.log("CUDA graphs are off under several processes: the gradient all-reduce is not recorded")

    def _resume(self) -> list[dict[str, float]] | None:
        """Restore the state of a resumable checkpoint; its metric history, or None when starting afresh."""
        # rank 0's checkpoint on every rank: other machines have no copy of it
        ckpt = self.world.from_main(self._resumable() if self.world.is_main else None)
        if ckpt is None:
            return None
        history = self.state.restore(ckpt, self.paths.checkpoint)
        done = self.state.iteration
        self.log(f"resuming from {self.paths.checkpoint}: {done // self.per_epoch} epochs ({done} iterations) done")
        if done == self.total:
            self.log("training had finished before its outputs were written; writing them")
        return history

    def _resumable(self) -> dict[str, Any] | None:
        """Rank 0: the checkpoint to resume, with every kept generator it lists in place; else None, saying why."""
        ckpt = load_checkpoint(self.paths.checkpoint, self.fingerprint, self.log)
        listed = ckpt.get("kept") if ckpt is not None else None
        if isinstance(listed, dict):  # another type is a damaged checkpoint: RunState.restore says so
            reason = kept_mismatch(self.paths.kept_state, {str(k): str(v) for k, v in listed.items()})
            if reason:
                self.log(f"ignoring checkpoint {self.paths.checkpoint}: {reason}; training from scratch")
                return None
        return ckpt

    def loop(self, deliver: Callable[[TrainResult], None] | None) -> TrainResult:
        cfg, state = self.cfg, self.state
        if state.iteration == 0:
            self.snapshot()
        try:
            with StopSignals() as stop:
                while state.iteration < self.total:
                    state.epoch_start = state.shuffle.get_state()
                    start = state.iteration % self.per_epoch
                    batches = epoch_batches(
                        self.images, cfg.batch_size, state.shuffle, self.world.rank, self.world.world_size, start,
                        self.labels,
                    )  # fmt: skip
                    for real, labels in itertools.islice(batches, self.total - state.iteration):
                        state.step(real, state.iteration, labels)  # the WGAN iteration: wgan.training.step
                        state.iteration += 1
                        self.bar.update()
                        if state.iteration % cfg.log_every == 0:
                            self.log_point()
                        if state.iteration % cfg.sample_interval == 0:
                            self.snapshot()
                        self.poll(stop.signum)  # a signal or the checkpoint clock; alone: two attribute reads
                    epochs_done, mid_epoch = divmod(state.iteration, self.per_epoch)
                    if not mid_epoch and state.iteration < self.total:  # the end of the run: finish()
                        if epochs_done % cfg.keep_every == 0:
                            self.keep_generator()  # before the checkpoint, which lists it
                        if epochs_done % cfg.checkpoint_every == 0:
                            self.checkpoint(finished=False)
                signum, _ = self.world.stop_signal(stop.signum)  # a signal during the last epoch-end checkpoint
                if signum is not None:
                    self.stop_here(signum)
            self.finish(deliver is None)
        except RuntimeError as exc:  # a failed collective: say at which iteration (dist.DistError is one too)
            lost = self.world.lost_peer(exc, f" at iteration {state.iteration}")
            if lost is None:
                raise
            raise lost from exc
        finally:
            self.bar.close()
        return self.deliver(deliver)

    def poll(self, signum: int | None) -> None:
        """Stop on a signal, or checkpoint when ``train.checkpoint_minutes`` have passed since the last one;
        ranks agree on both (``World.stop_signal``), so all of them checkpoint at the same iteration."""
        minutes = self.cfg.checkpoint_minutes
        due = minutes > 0 and time.monotonic() - self.saved_time >= 60 * minutes
        signum, due = self.world.stop_signal(signum, self.state.iteration, due)
        if signum is not None:
            self.stop_here(signum)
        if due and self.state.iteration < self.total:  # the end state is checkpointed by finish()
            self.checkpoint(finished=False)

    def finish(self, finished: bool) -> None:
        """The last metric point and snapshot, then the checkpoint of the end state."""
        if self.rate.iteration != self.state.iteration:  # not logged at this very iteration (in the loop or before)
            self.log_point()
        if self.state.samples.iteration[-1] != self.state.iteration:
            self.snapshot()
        self.keep_generator()  # the end of every run is kept, so the quality stage always has a point
        # with outputs still to write, a kill from here on resumes at the end and only writes them
        self.checkpoint(finished)

    def deliver(self, deliver: Callable[[TrainResult], None] | None) -> TrainResult:
        """Rank 0: copy the kept generators and the curves out of the run state, hand the result to ``deliver``,
        then mark the checkpoint finished and drop the copies (a finished checkpoint is never resumed)."""
        if self.live is not None:
            self.live.end()
        result = TrainResult(  # with train.ema_decay > 0 the averaged generator; the checkpoint keeps the live one
            self.sampler(), self.state.critic, self.state.samples, self.live.latest() if self.live else {},
            self.state.iteration, self.norm,
        )  # fmt: skip
        if self.world.is_main:
            copy_dir(self.paths.kept_state, self.paths.kept)
            copy_dir(self.paths.live_state, self.paths.live_dir)
            if deliver is not None:
                deliver(result)
                save_checkpoint({**self.saved_state, "finished": True}, self.paths.checkpoint)
            for folder in (self.paths.kept_state, self.paths.live_state):
                shutil.rmtree(folder, ignore_errors=True)
        return result

    def epoch_of(self, iteration: int) -> int:
        """The 0-based epoch that ``iteration`` (a count of completed iterations) finished in."""
        return max(iteration - 1, 0) // self.per_epoch

    def sampler(self) -> Generator:
        """The generator that samples: the averaged one when train.ema_decay > 0 (training.ema), else the live one."""
        ema = self.state.step.ema
        return self.state.generator if ema is None else ema.ready(self.state.step.autocast)

    def keep_generator(self) -> None:
        """The sampling generator into the run state's kept folder (``wgan.training.keep``), listed in the next
        checkpoint."""
        generator = self.sampler()  # on every rank: the average's BatchNorm recompute is collective under torchrun
        if self.world.is_main:
            epoch = kept_epoch(self.state.iteration, self.per_epoch)
            keep(self.paths.kept_state, generator, self.norm, epoch, self.state.kept)

    def snapshot(self) -> None:
        """The fixed latent vectors through the sampling generator in eval mode, kept as uint8 pixels."""
        generator, it = self.sampler(), self.state.iteration
        with _eval_mode(generator), torch.no_grad(), self.state.step.autocast():
            images = generator(self.fixed.z, *label_args(self.fixed.labels))
        self.state.samples.append(to_uint8(images.float().cpu(), *self.norm), self.epoch_of(it), it)

    def log_point(self) -> None:
        """Read the metric sums, add the held-out estimate and the rate, stop on a NaN, log."""
        state, fixed = self.state, self.fixed
        values = state.step.take_metrics()
        with _eval_mode(state.generator), torch.no_grad(), state.step.autocast():
            digits = label_args(fixed.held_labels)  # as in training: the fakes get the real images' digits
            d_real = state.critic(fixed.held_real, *digits)
            fake = state.generator(fixed.held_z, *digits)
            values[M_HELDOUT] = losses.wasserstein_estimate(d_real, state.critic(fake, *digits)).item()
        for name, value in values.items():  # a NaN or inf anywhere since the last read stays in the sums
            if not math.isfinite(value):
                self.diverged(f"{name} = {value}")
        self.finite_at = state.iteration
        values[M_RATE] = self.rate(state.iteration)
        if self.live is not None:
            self.live.log(state.iteration, values)
        shown = {key: f"{values[name]:.4g}" for key, name in BAR_FIELDS if name in values}
        self.bar.set_postfix(epoch=self.epoch_of(state.iteration), **shown, refresh=False)

    def checkpoint(self, finished: bool) -> None:
        """Rank 0 saves the exact position (a non-finite state is refused: the last good checkpoint stays).

        Every rank builds the state (the step's metric sums are reduced over ranks) and checks it, so all
        ranks stop together on a non-finite one.
        """
        history = self.live.history if self.live is not None else []
        state = self.state.to_checkpoint(self.fingerprint, self.per_epoch, history, finished)
        try:
            if self.world.is_main:
                save_checkpoint(state, self.paths.checkpoint)
                self.saved_state = state
            elif (bad := first_nonfinite(state)) is not None:
                raise ValueError(bad)
        except ValueError as exc:
            self.diverged(f"the training state has a NaN or infinity in {exc}")
        self.saved_at = self.finite_at = self.state.iteration
        self.saved_time = time.monotonic()

    def stop_here(self, signum: int) -> NoReturn:
        self.checkpoint(finished=False)
        raise StageInterrupted(
            signum,
            f"stopped by {signal_name(signum)} at iteration {self.state.iteration} of {self.total}; "
            f"{self.paths.checkpoint} is saved: run `dvc repro train` (or this stage) again to resume",
        )

    def diverged(self, what: str) -> NoReturn:
        where = self.paths.checkpoint
        kept = f"{where} (iteration {self.saved_at}) is kept" if self.saved_at is not None else "no checkpoint saved"
        raise UserError(
            f"training diverged: {what} at iteration {self.state.iteration} (finite at iteration {self.finite_at}, "
            f"checked every train.log_every = {self.cfg.log_every} iterations); {divergence_fix(self.cfg)}; {kept}"
        )


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Run ``model`` in eval mode inside the block (BatchNorm uses and keeps its running statistics)."""
    model.eval()
    try:
        yield
    finally:
        model.train()
