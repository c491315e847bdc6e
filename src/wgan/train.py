"""The WGAN training loop: in-memory data, resumable checkpoints, DVCLive metrics, fixed-noise samples.

Design (each choice keeps the loop fast on a small CPU and ready for a GPU or DDP later):

* The whole training split lives on the training device; each epoch is one ``torch.randperm`` on that
  device (its ``torch.Generator`` seeded from ``train.seed``) and batches are gathered by index. There are
  no per-sample transforms and no DataLoader. The last incomplete batch is dropped, so an epoch is
  ``len(train) // batch_size`` iterations (937 for MNIST at 64; the tutorial keeps the partial 938th): every
  step sees the same batch size (comparable loss values, static shapes) and every sample still takes part
  because each epoch has a new permutation. ``batch_indices`` shards a batch by rank for a DDP launcher.
* One *iteration* is one critic step; a generator step follows on every iteration ``i`` (0-based, counted
  over the whole run, not per epoch as in the tutorial) with ``i % n_critic == 0``, so the cadence does not
  jump at epoch boundaries. Fresh noise is drawn for every step from a dedicated seeded generator.
* Metrics are summed on the device and read (one host sync) only every ``log_every`` iterations. Metric
  steps, sample iterations and checkpoints all count *completed* iterations.
* Logging, sampling and the held-out estimate never touch a random stream or a training statistic (the
  generator runs in eval mode for them), so ``log_every`` and ``sample_interval`` do not change the weights.
* Checkpoints are written at epoch ends, and at the next iteration boundary after SIGINT (Ctrl-C) or SIGTERM,
  which then stop the run (``StageInterrupted``). A checkpoint holds the exact position, mid-epoch included:
  the shuffle state at the start of the current epoch (its permutation is redrawn on resume) and the
  iteration count, plus every RNG state, the optimizers, the metric accumulators, samples and metric history,
  so a resumed run ends with the weights of an uninterrupted one. Files are replaced atomically, so a
  SIGKILL at any moment leaves the previous checkpoint intact.
* A NaN or infinite loss stops the run with a ``UserError`` naming the iteration. To keep the loop free of
  per-step host syncs it is detected at the metric reads (every ``log_every`` iterations: the accumulated
  sums turn non-finite) and in the state about to be checkpointed, so detection comes at most ``log_every``
  iterations late, and no non-finite state is ever written: the last good checkpoint stays.
* A checkpoint is only resumed when the train params, the data files, the training code and the device
  type all match and the run it holds is unfinished; otherwise it is ignored (with a message) and overwritten.
  A run is finished only once its outputs are written (``deliver``): the end-of-training state is first saved
  as an unfinished checkpoint, so a kill while the outputs are being written resumes at the end and just
  writes them, instead of losing the run. A finished checkpoint stays on disk (it is a DVC output) and a
  rerun with it present trains from scratch, so a forced rerun really retrains and rewrites every output.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn, TextIO

import torch
from tqdm import tqdm

from wgan import losses, models, optim
from wgan.cli import StageInterrupted, signal_name
from wgan.config import TrainConfig, to_dict
from wgan.data import IMAGE_SHAPE, Split, load_prepared, to_uint8
from wgan.device import choose_device
from wgan.errors import UserError
from wgan.fileio import torch_load_safe, torch_save_atomic
from wgan.models import Critic, Generator
from wgan.render import SAMPLES_FORMAT  # the reader owns the format; this is its only writer
from wgan.summary import model_summary

CHECKPOINT_FORMAT = "wgan-checkpoint-v1"
PREPARE_HINT = "rebuild it with `dvc repro prepare`"

# DVCLive metric names: files are dvclive/plots/metrics/<name>.tsv, summary keys nest on "/" in metrics.json.
M_CRITIC = "train/critic_loss"  # what the critic minimizes: -wasserstein, plus the penalty under wgan-gp
M_GENERATOR = "train/generator_loss"
M_WASSERSTEIN = "train/wasserstein"
M_GP = "train/gradient_penalty"
M_HELDOUT = "test/wasserstein"
M_RATE = "perf/iters_per_sec"


@dataclass(frozen=True)
class TrainPaths:
    """Every file the train stage reads or writes, relative to the working directory (DVC runs from the root)."""

    train_data: Path = Path("data/prepared/train.pt")
    test_data: Path = Path("data/prepared/test.pt")
    generator: Path = Path("models/generator.pt")
    critic: Path = Path("models/critic.pt")
    samples: Path = Path("models/samples.pt")
    checkpoint: Path = Path("models/checkpoint.pt")
    live_dir: Path = Path("dvclive")


@dataclass
class Samples:
    """Fixed-noise snapshots so far: uint8 images [n_fixed, 1, 28, 28] with their epoch and iteration."""

    images: list[torch.Tensor] = field(default_factory=list)
    epoch: list[int] = field(default_factory=list)
    iteration: list[int] = field(default_factory=list)

    def to_payload(self) -> dict[str, Any]:
        """The ``wgan-samples-v1`` file content (also stored in checkpoints)."""
        return {
            "format": SAMPLES_FORMAT,
            "images": torch.stack(self.images),
            "epoch": torch.tensor(self.epoch, dtype=torch.int64),
            "iteration": torch.tensor(self.iteration, dtype=torch.int64),
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Samples:
        return cls(list(payload["images"].unbind(0)), payload["epoch"].tolist(), payload["iteration"].tolist())


@dataclass
class TrainResult:
    """What a finished run hands to the stage to write: the models (train mode, on their device) and samples."""

    generator: Generator
    critic: Critic
    samples: Samples
    metrics: dict[str, float]
    iterations: int


def save_samples(samples: Samples, path: str | Path) -> None:
    """Write ``models/samples.pt`` atomically (format ``wgan-samples-v1``)."""
    torch_save_atomic(samples.to_payload(), path)


def derive_seed(seed: int, stream: str) -> int:
    """Independent 63-bit seeds for the named random streams of one run (no overlap between streams)."""
    digest = hashlib.sha256(f"{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def batch_indices(perm: torch.Tensor, i: int, batch_size: int, rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """Indices of batch ``i`` of an epoch's permutation; under DDP each rank takes its strided share."""
    return perm[i * batch_size : (i + 1) * batch_size][rank::world_size]


def epoch_batches(
    images: torch.Tensor,
    batch_size: int,
    shuffle: torch.Generator,
    rank: int = 0,
    world_size: int = 1,
    start: int = 0,
) -> Iterator[torch.Tensor]:
    """One epoch of full batches gathered from on-device ``images`` in a fresh random order (last partial dropped).

    ``start`` skips the first batches (a run resumed mid-epoch, ``shuffle`` set to the epoch's start state).
    """
    perm = torch.randperm(images.shape[0], generator=shuffle, device=images.device)
    for i in range(start, images.shape[0] // batch_size):
        yield images[batch_indices(perm, i, batch_size, rank, world_size)]


class WGANStep:
    """One training iteration: a critic step, plus a generator step on every ``n_critic``-th iteration.

    Metrics are accumulated as device tensors; ``take_metrics`` reads and resets them (one host sync).
    The benchmark times this class, so it is the real training code, not a copy.

    Speed (measured in benchmarks/README.md): fakes for the critic are made under ``no_grad``; real and fake go
    through the critic in one forward; the critic is frozen during the generator step; clipping is two
    ``_foreach`` calls; no host sync per step; on the CPU the optimizers run fused kernels (``wgan.optim``).
    On CUDA, TF32 matmuls are on and the weight-clipping iteration is recorded once as two CUDA graphs (critic
    update, generator update) and replayed, which removes the per-kernel launch cost that dominates at batch 64
    (``graphs=False`` opts out; wgan-gp stays eager).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        generator: Generator,
        critic: Critic,
        noise: torch.Generator,
        graphs: bool | None = None,
    ) -> None:
        self.cfg = cfg
        self.generator = generator
        self.critic = critic
        self.noise = noise
        self.device = next(generator.parameters()).device
        self.critic_params = list(critic.parameters())
        self.opt_g = optim.make_optimizer(cfg, generator.parameters(), self.device)
        self.opt_d = optim.make_optimizer(cfg, self.critic_params, self.device)
        cuda = self.device.type == "cuda"
        self._tune_optimizers()
        if cuda:  # TF32 tensor cores for float32 matmuls (10-bit mantissa inputs, float32 sums); CUDA only
            torch.backends.cuda.matmul.allow_tf32 = True  # the legacy switch: the new one breaks legacy readers
        self.autocast: Callable[[], Any] = functools.partial(
            # no weight-cast cache on CUDA: a cache inside a graph capture would hold freed capture memory
            torch.autocast,
            self.device.type,
            dtype=torch.bfloat16,
            enabled=cfg.precision == "bf16",
            cache_enabled=not cuda,
        )
        self.gp = cfg.loss == "wgan-gp"
        # graphs need the noise drawn on the device (a CPU draw would be frozen into the graph) and no double backward
        can_graph = cuda and not self.gp and noise.device.type == "cuda"
        if graphs and not can_graph:
            raise ValueError("CUDA graphs need a CUDA device, a CUDA noise generator and loss 'wgan'")
        self.use_graphs = can_graph if graphs is None else graphs
        self._graphs: tuple[torch.cuda.CUDAGraph, torch.cuda.CUDAGraph] | None = None
        self._static_real = torch.empty(0, device=self.device)
        # sums of [critic loss, train Wasserstein estimate, gradient penalty] and of the generator loss
        self.critic_sums = torch.zeros(3, device=self.device)
        self.generator_sum = torch.zeros((), device=self.device)
        self.critic_count = 0
        self.generator_count = 0
        self.zero = torch.zeros((), device=self.device)

    def _tune_optimizers(self) -> None:
        """On CUDA, optimizer steps that a CUDA graph can record (step counts on the device, no host sync).

        On the CPU there is nothing to tune: ``wgan.optim`` already picked its fused kernels there.
        """
        if self.device.type != "cuda":
            return
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group["capturable"] = True

    def _latent(self, n: int) -> torch.Tensor:
        """Noise from ``self.noise`` on its own device (a no-op move in training, where it is the model's)."""
        return torch.randn(n, self.cfg.latent_dim, device=self.noise.device, generator=self.noise).to(self.device)

    def __call__(self, real: torch.Tensor, iteration: int) -> None:
        """Train on one batch of real images; ``iteration`` is the 0-based global iteration number."""
        generator_turn = iteration % self.cfg.n_critic == 0
        if self.use_graphs:
            self._replay(real, generator_turn)
            return
        self.critic_step(real)
        if generator_turn:
            self.generator_step(real.shape[0])

    def critic_step(self, real: torch.Tensor) -> None:
        self._critic_update(real)
        self.critic_count += 1

    def generator_step(self, n: int) -> None:
        self._generator_update(n)
        self.generator_count += 1

    def _critic_update(self, real: torch.Tensor) -> None:
        n = real.shape[0]
        with torch.no_grad(), self.autocast():
            fake = self.generator(self._latent(n)).to(real.dtype)
        with self.autocast():
            scores = self.critic(torch.cat([real, fake]))  # one forward for both halves: the critic has no BatchNorm
        d_real, d_fake = scores[:n], scores[n:]
        loss = losses.critic_loss(d_real, d_fake)
        if self.gp:
            x_hat = losses.interpolate(real, fake, self.noise)
            penalty = losses.gradient_penalty(
                self.critic, x_hat, self.cfg.gp_lambda, autocast=self.cfg.precision == "bf16"
            )
            total = loss + penalty
        else:
            penalty, total = self.zero, loss
        self.opt_d.zero_grad(set_to_none=True)
        total.backward()
        self.opt_d.step()
        if not self.gp:
            losses.clip_weights_(self.critic_params, self.cfg.clip_value)
        self.critic_sums += torch.stack([total.detach(), -loss.detach(), penalty.detach()])

    def _generator_update(self, n: int) -> None:
        """Gradients flow through the (frozen) critic into the generator; the critic's weights stay put."""
        for p in self.critic_params:
            p.requires_grad_(False)
        try:
            with self.autocast():
                loss = losses.generator_loss(self.critic(self.generator(self._latent(n))))
            self.opt_g.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_g.step()
        finally:
            for p in self.critic_params:
                p.requires_grad_(True)
        self.generator_sum += loss.detach()

    def _replay(self, real: torch.Tensor, generator_turn: bool) -> None:
        """The CUDA-graph iteration: copy the batch into the captured input, replay one or both updates."""
        if self._graphs is None or self._static_real.shape != real.shape:
            self._capture(real)
        assert self._graphs is not None
        self._static_real.copy_(real)
        self._graphs[0].replay()
        self.critic_count += 1
        if generator_turn:
            self._graphs[1].replay()
            self.generator_count += 1

    def _capture(self, real: torch.Tensor) -> None:
        """Record the critic update and the generator update as two CUDA graphs.

        PyTorch's recipe: a few eager iterations on a side stream first, so that the optimizer state, cuBLAS
        workspaces and autograd's lazy setup exist outside the graphs. Their effect on the weights, optimizer
        state, metric sums and the noise stream is then undone, so replaying continues the eager run exactly.
        """
        n = real.shape[0]
        self._static_real = real.detach().clone()
        saved = self._save_state()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(3):
                self._critic_update(self._static_real)
                self._generator_update(n)
        torch.cuda.current_stream(self.device).wait_stream(side)
        self._restore_state(saved)
        captured = []
        for update in (
            functools.partial(self._critic_update, self._static_real),
            functools.partial(self._generator_update, n),
        ):
            graph = torch.cuda.CUDAGraph()
            graph.register_generator_state(self.noise)  # replays draw fresh noise and advance the stream
            with torch.cuda.graph(graph):
                update()
            captured.append(graph)
        self._graphs = (captured[0], captured[1])

    def _state_tensors(self) -> list[torch.Tensor]:
        """Everything a training step changes in place, optimizer state aside."""
        models_state = [*self.generator.state_dict().values(), *self.critic.state_dict().values()]
        return [*models_state, self.critic_sums, self.generator_sum]

    def _save_state(self) -> tuple[list[torch.Tensor], dict[int, list[torch.Tensor]], torch.Tensor]:
        """Copies of the step's state (optimizer state only where it exists yet) and the noise stream's state."""
        opt_state = {id(opt): [t.clone() for t in self._optimizer_tensors(opt)] for opt in (self.opt_g, self.opt_d)}
        return [t.detach().clone() for t in self._state_tensors()], opt_state, self.noise.get_state()

    def _restore_state(self, saved: tuple[list[torch.Tensor], dict[int, list[torch.Tensor]], torch.Tensor]) -> None:
        """Undo the warm-up: a state that did not exist before is reset to its initial zeros (RMSprop, Adam)."""
        tensors, opt_state, noise_state = saved
        with torch.no_grad():
            for t, old in zip(self._state_tensors(), tensors, strict=True):
                t.copy_(old)
            for opt in (self.opt_g, self.opt_d):
                before = opt_state[id(opt)]
                for i, t in enumerate(self._optimizer_tensors(opt)):
                    if before:
                        t.copy_(before[i])
                    else:
                        t.zero_()
        self.noise.set_state(noise_state)

    @staticmethod
    def _optimizer_tensors(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
        return [t for state in opt.state.values() for t in state.values() if isinstance(t, torch.Tensor)]

    def take_metrics(self) -> dict[str, float]:
        """Averages since the last call (one host sync), then reset; empty groups are left out."""
        out: dict[str, float] = {}
        if self.critic_count:
            critic, wasserstein, penalty = (self.critic_sums / self.critic_count).tolist()
            out[M_CRITIC], out[M_WASSERSTEIN] = critic, wasserstein
            if self.gp:
                out[M_GP] = penalty
        if self.generator_count:
            out[M_GENERATOR] = self.generator_sum.item() / self.generator_count
        self.critic_sums.zero_()
        self.generator_sum.zero_()
        self.critic_count = self.generator_count = 0
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "critic_sums": self.critic_sums.cpu(),
            "generator_sum": self.generator_sum.cpu(),
            "critic_count": self.critic_count,
            "generator_count": self.generator_count,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self._tune_optimizers()
        self._graphs = None  # the optimizer state tensors were replaced: capture again at the next step
        self.critic_sums.copy_(state["critic_sums"])
        self.generator_sum.copy_(state["generator_sum"])
        self.critic_count = int(state["critic_count"])
        self.generator_count = int(state["generator_count"])


def build_models(cfg: TrainConfig, device: torch.device) -> tuple[Generator, Critic]:
    """Both models, initialized from ``train.seed`` on the CPU (same weights on every device), then moved."""
    torch.manual_seed(cfg.seed)
    generator = Generator(cfg.latent_dim, cfg.g_hidden, IMAGE_SHAPE)
    critic = Critic(IMAGE_SHAPE, cfg.d_hidden)
    return generator.to(device), critic.to(device)


def _device_rng_state(device: torch.device) -> torch.Tensor | None:
    if device.type == "cuda":
        return torch.cuda.get_rng_state(device)
    if device.type == "mps":
        return torch.mps.get_rng_state()
    return None


def _set_device_rng_state(device: torch.device, state: torch.Tensor | None) -> None:
    if state is None:
        return
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    elif device.type == "mps":
        torch.mps.set_rng_state(state)


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def training_code() -> list[Path]:
    """The source files whose bytes decide a run's numbers: the train stage's code deps in dvc.yaml."""
    return [Path(str(module.__file__)) for module in (losses, models, optim, sys.modules[__name__])]


def run_fingerprint(cfg: TrainConfig, paths: TrainPaths, device: torch.device) -> dict[str, Any]:
    """What must match for a checkpoint to be resumed: params, data bytes, training code, device type."""
    code = hashlib.sha256()
    for path in training_code():
        code.update(path.read_bytes())
    return {
        "config": to_dict(cfg),
        "data": {"train": _sha256(paths.train_data), "test": _sha256(paths.test_data)},
        "code": code.hexdigest(),
        "device_type": device.type,
    }


def _mismatch(saved: dict[str, Any], current: dict[str, Any]) -> str:
    """Why a checkpoint's fingerprint differs from this run's, in words ('' when it matches)."""
    if saved.get("config") != current["config"]:
        old = saved["config"] if isinstance(saved.get("config"), dict) else {}
        keys = sorted(k for k in current["config"] if old.get(k) != current["config"][k])
        return "other train params (" + ", ".join(f"{k}: {old.get(k)} -> {current['config'][k]}" for k in keys) + ")"
    if saved.get("data") != current["data"]:
        return "other prepared data"
    if saved.get("code") != current["code"]:
        return "other training code"
    if saved.get("device_type") != current["device_type"]:
        return f"another device type ({saved.get('device_type')}, now {current['device_type']})"
    return ""


def load_checkpoint(path: Path, fingerprint: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any] | None:
    """The checkpoint to resume from, or None (with a printed reason when one exists but cannot be used)."""
    if not path.exists():
        return None
    try:
        ckpt = torch_load_safe(path, "checkpoint", "it will be overwritten")
    except UserError as exc:
        log(f"ignoring {exc}; training from scratch")
        return None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        log(f"ignoring checkpoint {path}: not a {CHECKPOINT_FORMAT} file; training from scratch")
        return None
    saved = ckpt.get("fingerprint")
    reason = _mismatch(saved if isinstance(saved, dict) else {}, fingerprint)
    if reason:
        log(f"ignoring checkpoint {path}: it was made with {reason}; training from scratch")
        return None
    if ckpt.get("finished") is True:  # `is`: a damaged file may hold a tensor here, whose truth value raises
        log(f"checkpoint {path} holds a finished run; training again from scratch")
        return None
    return ckpt


class _LineStream:
    """A file for tqdm when stderr is not a terminal: each refresh becomes one line, no carriage returns."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def _progress(total: int, initial: int, enabled: bool) -> tqdm:
    interactive = sys.stderr.isatty()
    return tqdm(
        total=total,
        initial=initial,
        unit="it",
        disable=not enabled,
        file=sys.stderr if interactive else _LineStream(sys.stderr),
        mininterval=0.5 if interactive else 30.0,
        maxinterval=10.0 if interactive else 300.0,
        delay=0.0 if interactive else 30.0,  # a log gets no bar lines at all from a run shorter than that
        dynamic_ncols=interactive,
        ascii=not interactive,
    )


def _load_splits(paths: TrainPaths, norm: tuple[float, float] | None) -> tuple[Split, Split]:
    mean, std = norm if norm is not None else (None, None)
    train_split = load_prepared(paths.train_data, mean, std)
    test_split = load_prepared(paths.test_data, mean, std)
    if not (math.isclose(train_split.mean, test_split.mean) and math.isclose(train_split.std, test_split.std)):
        raise UserError(
            f"{paths.train_data} and {paths.test_data} were prepared with different normalizations; {PREPARE_HINT}"
        )
    if len(test_split) == 0:
        raise UserError(f"{paths.test_data} holds no images; {PREPARE_HINT}")
    return train_split, test_split


class _Live:
    """The DVCLive logger plus the history of every logged point, kept so a resumed run can replay it.

    DVC deletes a stage's (non-persistent) outputs before rerunning it, and a killed run may have logged
    points after its last checkpoint, so the checkpoint, not ``dvclive/``, is the source of truth: on resume
    the folder is rewritten from the checkpoint's history (a fresh ``Live`` then the replay), which leaves
    exactly what an uninterrupted run would have logged.
    """

    def __init__(self, live_dir: Path, history: list[dict[str, float]]) -> None:
        from dvclive import Live  # imported late: it is slow to import and only the main process logs

        self.live = Live(dir=str(live_dir), resume=False, save_dvc_exp=False, dvcyaml=False)
        self.history: list[dict[str, float]] = []
        for point in history:
            self.log(int(point["step"]), {k: v for k, v in point.items() if k != "step"}, sync=False)
        self.live.make_summary()

    def log(self, step: int, values: dict[str, float], sync: bool = True) -> None:
        self.live.step = step
        for name, value in values.items():
            self.live.log_metric(name, value)
        self.history.append({"step": float(step), **values})
        if sync:
            self.live.make_summary()

    def end(self) -> None:
        self.live.end()


class _StopSignals:
    """While active, SIGINT and SIGTERM only record ``signum``; the loop stops at the next iteration boundary.

    A second signal stops at once (``StageInterrupted``, without a new checkpoint) for a user who will not
    wait. Handlers can only be set from the main thread; elsewhere signals keep their usual effect.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            self.previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            raise StageInterrupted(signum, f"stopped by a second {signal_name(signum)}, without a new checkpoint")
        self.signum = signum


def _first_nonfinite(tree: Any, where: str = "") -> str | None:
    """The key path of the first floating-point tensor in ``tree`` holding a NaN or an infinity, else None."""
    if isinstance(tree, torch.Tensor):
        return where if tree.is_floating_point() and not bool(torch.isfinite(tree).all()) else None
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, (list, tuple)) else ()
    for key, value in items:
        found = _first_nonfinite(value, f"{where}/{key}" if where else str(key))
        if found is not None:
            return found
    return None


def _divergence_fix(cfg: TrainConfig) -> str:
    """What to change in params.yaml after the losses blew up."""
    fixes = [f"lower train.lr (now {cfg.lr:g})"]
    if cfg.loss == "wgan":
        fixes.append("use train.loss: wgan-gp")
    else:
        fixes.append(f"lower train.gp_lambda (now {cfg.gp_lambda:g})")
    if cfg.precision == "bf16":
        fixes.append("use train.precision: fp32")
    return ", or ".join(fixes)


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

    ``rank``/``world_size`` are the hooks for a DDP launcher: batches are sharded by rank and only rank 0
    writes files. ``norm`` (prepare's mean, std), when given, must be the data's normalization: a stale
    prepared file is then an error instead of a silently different run. ``deliver`` (rank 0 only) writes the
    outputs; the checkpoint is marked finished after it returns. Returns the trained models and samples.
    Raises ``UserError`` when the losses turn NaN or infinite and
    ``StageInterrupted`` after a SIGINT/SIGTERM (once the resumable checkpoint is written).
    """
    paths = paths or TrainPaths()
    device = device or choose_device()
    is_main = rank == 0
    train_split, test_split = _load_splits(paths, norm)
    n = len(train_split)
    if cfg.batch_size > n:
        raise UserError(f"train.batch_size = {cfg.batch_size} is larger than the training split ({n} images); lower it")
    if cfg.batch_size % world_size:
        raise UserError(f"train.batch_size = {cfg.batch_size} is not divisible by the {world_size} processes")
    per_epoch = n // cfg.batch_size
    total = cfg.epochs * per_epoch if cfg.max_iterations == 0 else min(cfg.max_iterations, cfg.epochs * per_epoch)
    fingerprint = run_fingerprint(cfg, paths, device)

    generator, critic = build_models(cfg, device)
    if is_main:
        log(f"device: {device}")
        if cfg.precision == "bf16" and device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            log(
                "warning: this CPU has no native bfloat16 support, so train.precision: bf16 runs several times "
                "slower than fp32 here; use fp32"
            )
        log(model_summary(generator, (cfg.latent_dim,), "Generator"))
        log(model_summary(critic, IMAGE_SHAPE, "Critic"))
    shuffle = torch.Generator(device).manual_seed(derive_seed(cfg.seed, "shuffle"))
    noise = torch.Generator(device).manual_seed(derive_seed(cfg.seed, "noise"))
    step = WGANStep(cfg, generator, critic, noise)

    fixed = torch.Generator().manual_seed(derive_seed(cfg.seed, "fixed"))
    fixed_z = torch.randn(cfg.n_fixed, cfg.latent_dim, generator=fixed).to(device)
    held = torch.Generator().manual_seed(derive_seed(cfg.seed, "heldout"))
    n_held = min(cfg.batch_size, len(test_split))
    held_real = test_split.images[torch.randperm(len(test_split), generator=held)[:n_held]].to(device)
    held_z = torch.randn(n_held, cfg.latent_dim, generator=held).to(device)
    images = train_split.images.to(device)

    samples, history, iteration = Samples(), [], 0
    ckpt = load_checkpoint(paths.checkpoint, fingerprint, log if is_main else lambda _: None)
    if ckpt is not None:
        generator.load_state_dict(ckpt["generator"])
        critic.load_state_dict(ckpt["critic"])
        step.load_state_dict(ckpt["step"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        _set_device_rng_state(device, ckpt["rng"]["device"])
        shuffle.set_state(ckpt["rng"]["shuffle"])
        noise.set_state(ckpt["rng"]["noise"])
        samples = Samples.from_payload(ckpt["samples"])
        history, iteration = ckpt["metrics"], int(ckpt["iteration"])
        log(f"resuming from {paths.checkpoint}: {iteration // per_epoch} epochs ({iteration} iterations) done")
        if iteration == total:
            log("training had finished before its outputs were written; writing them")
    saved_at = iteration if ckpt is not None else None  # the iteration of the checkpoint on disk for this run
    finite_at = iteration  # the last iteration at which the losses and the state were seen finite

    live = _Live(paths.live_dir, history) if is_main else None
    bar = _progress(total, iteration, is_main)
    last_log_it, last_log_time = iteration, time.perf_counter()
    shown: dict[str, str] = {}  # the latest value of each loss, for the progress bar

    def epoch_of(it: int) -> int:
        """The 0-based epoch that iteration ``it`` (a count of completed iterations) finished in."""
        return max(it - 1, 0) // per_epoch

    def snapshot() -> None:
        with _eval_mode(generator), torch.no_grad(), step.autocast():
            imgs = generator(fixed_z)
        samples.images.append(to_uint8(imgs.float().cpu(), train_split.mean, train_split.std))
        samples.epoch.append(epoch_of(iteration))
        samples.iteration.append(iteration)

    def diverged(what: str) -> NoReturn:
        kept = f"{paths.checkpoint} (iteration {saved_at}) is kept" if saved_at is not None else "no checkpoint saved"
        raise UserError(
            f"training diverged: {what} at iteration {iteration} (finite at iteration {finite_at}, checked every "
            f"train.log_every = {cfg.log_every} iterations); {_divergence_fix(cfg)}; {kept}"
        )

    def log_point() -> None:
        nonlocal last_log_it, last_log_time, finite_at
        values = step.take_metrics()
        with _eval_mode(generator), torch.no_grad(), step.autocast():
            values[M_HELDOUT] = losses.wasserstein_estimate(critic(held_real), critic(generator(held_z))).item()
        for name, value in values.items():  # a NaN or inf anywhere since the last read stays in the sums
            if not math.isfinite(value):
                diverged(f"{name} = {value}")
        finite_at = iteration
        now = time.perf_counter()
        values[M_RATE] = (iteration - last_log_it) / max(now - last_log_time, 1e-9)
        last_log_it, last_log_time = iteration, now
        if live is not None:
            live.log(iteration, values)
        shown.update(
            {
                k: f"{values[m]:.4g}"
                for k, m in (("D", M_CRITIC), ("G", M_GENERATOR), ("W", M_WASSERSTEIN))
                if m in values
            }
        )
        bar.set_postfix(epoch=epoch_of(iteration), **shown, refresh=False)

    def checkpoint(finished: bool) -> None:
        nonlocal saved_at, finite_at
        # the shuffle state that redraws the permutation of the epoch the next iteration belongs to
        shuffle_state = shuffle.get_state() if iteration % per_epoch == 0 else epoch_start
        state = {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": fingerprint,
            "finished": finished,
            "epochs_done": iteration // per_epoch,
            "iteration": iteration,
            "generator": _cpu_state(generator),
            "critic": _cpu_state(critic),
            "step": step.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "device": _device_rng_state(device),
                "shuffle": shuffle_state,
                "noise": noise.get_state(),
            },
            "samples": samples.to_payload(),
            "metrics": live.history if live is not None else [],
        }
        bad = _first_nonfinite(state)  # covers the loss sums since the last metric read and every weight
        if bad is not None:
            diverged(f"the training state has a NaN or infinity in {bad}")
        torch_save_atomic(state, paths.checkpoint)
        saved_at = finite_at = iteration

    def stop_here(signum: int) -> NoReturn:
        if is_main:
            checkpoint(finished=False)
        raise StageInterrupted(
            signum,
            f"stopped by {signal_name(signum)} at iteration {iteration} of {total}; {paths.checkpoint} is saved: "
            "run `dvc repro train` (or this stage) again to resume",
        )

    if iteration == 0:
        snapshot()
    epoch_start = shuffle.get_state()  # of the epoch in progress; set here too for a run resumed at its end
    try:
        with _StopSignals() as stop:
            while iteration < total:
                epoch_start = shuffle.get_state()
                batches = epoch_batches(images, cfg.batch_size, shuffle, rank, world_size, iteration % per_epoch)
                for real in itertools.islice(batches, total - iteration):
                    step(real, iteration)
                    iteration += 1
                    bar.update()
                    if iteration % cfg.log_every == 0:
                        log_point()
                    if iteration % cfg.sample_interval == 0:
                        snapshot()
                    if stop.signum is not None:  # a Python attribute read: no host sync
                        stop_here(stop.signum)
                epoch_done = iteration % per_epoch == 0 and (iteration // per_epoch) % cfg.checkpoint_every == 0
                if is_main and epoch_done and iteration < total:
                    checkpoint(finished=False)
            if stop.signum is not None:  # a signal during the last epoch-end checkpoint
                stop_here(stop.signum)
        if last_log_it != iteration:  # not logged at this very iteration (in the loop, or before a resume)
            log_point()
        if samples.iteration[-1] != iteration:
            snapshot()
        if is_main:  # with outputs still to write, a kill from here on resumes at the end and only writes them
            checkpoint(finished=deliver is None)
    finally:
        bar.close()
    if live is not None:
        live.end()
    final: dict[str, float] = {}  # the latest value of every metric, as in dvclive/metrics.json
    for point in live.history if live is not None else []:
        final.update({k: v for k, v in point.items() if k != "step"})
    result = TrainResult(generator, critic, samples, final, iteration)
    if is_main and deliver is not None:
        deliver(result)
        checkpoint(finished=True)
    return result


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Run ``model`` in eval mode inside the block (BatchNorm uses and keeps its running statistics)."""
    model.eval()
    try:
        yield
    finally:
        model.train()


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}
