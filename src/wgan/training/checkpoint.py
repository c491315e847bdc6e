"""The resumable checkpoint: what it holds and how a run is restored from it, its format, the fingerprint.

A checkpoint holds the exact position of a run (mid-epoch included: the shuffle state at the start of the
current epoch, whose permutation is redrawn on resume, and the iteration count), every RNG state, the
optimizers, the metric accumulators, the samples, the kept generators' digests and the metric history, so a
resumed run ends with the weights of an uninterrupted one. It is resumed only when the train params, the data
files, the training code and the device type all match and the run it holds is unfinished; otherwise it is
ignored (with a message) and overwritten. Nothing non-finite is ever written, so the last good checkpoint stays.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wgan.config import TrainConfig, to_dict
from wgan.data.model_file import cpu_state
from wgan.data.samples import Samples
from wgan.errors import UserError, one_line
from wgan.fileio import file_sha256, torch_load_safe, torch_save_atomic
from wgan.paths import ROOT, TrainPaths, stage_code

CHECKPOINT_FORMAT = "wgan-checkpoint-v1"
# train params that only say when to checkpoint: resume is exact from any iteration, so they cannot change the
# numbers, and a run resumes across a change of them
TIMING_PARAMS = frozenset({"checkpoint_every", "checkpoint_minutes"})


@dataclass
class RunState:
    """Everything of a run that a checkpoint saves and restores; the loop advances it.

    ``epoch_start`` is the shuffle state at the start of the epoch in progress: a mid-epoch checkpoint stores it,
    so the resumed run redraws that epoch's permutation and skips the batches already done.
    """

    generator: nn.Module
    critic: nn.Module
    step: Any  # wgan.training.step.WGANStep (optimizers, metric sums, the averaged generator)
    shuffle: torch.Generator
    noise: torch.Generator
    samples: Samples
    device: torch.device
    iteration: int = 0
    kept: dict[str, str] = field(default_factory=dict)  # the kept generators' files and digests (training.keep)
    epoch_start: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.epoch_start = self.shuffle.get_state()

    def to_checkpoint(
        self, fingerprint: dict[str, Any], per_epoch: int, history: list[dict[str, float]], finished: bool
    ) -> dict[str, Any]:
        at_epoch_end = self.iteration % per_epoch == 0  # then the next epoch's permutation is still to draw
        return {
            "fingerprint": fingerprint,
            "finished": finished,
            "epochs_done": self.iteration // per_epoch,
            "iteration": self.iteration,
            "generator": cpu_state(self.generator),
            "critic": cpu_state(self.critic),
            "step": self.step.state_dict(),
            "rng": rng_states(self.device, self.shuffle.get_state() if at_epoch_end else self.epoch_start, self.noise),
            "samples": self.samples.to_payload(),
            "kept": dict(self.kept),
            "metrics": history,
        }

    def restore(self, ckpt: dict[str, Any], path: Path) -> list[dict[str, float]]:
        """Load a checkpoint whose fingerprint matched; its metric history. Only a damaged file fails here."""
        try:
            self.generator.load_state_dict(ckpt["generator"])
            self.critic.load_state_dict(ckpt["critic"])
            self.step.load_state_dict(ckpt["step"])
            set_rng_states(ckpt["rng"], self.device, self.shuffle, self.noise)
            self.samples = Samples.from_payload(ckpt["samples"], path)
            self.iteration = int(ckpt["iteration"])
            self.kept = {str(name): str(digest) for name, digest in ckpt["kept"].items()}
            self.epoch_start = self.shuffle.get_state()
            return list(ckpt["metrics"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as exc:
            raise UserError(f"checkpoint {path} is damaged ({one_line(exc)}); delete it to train from scratch") from exc


def run_fingerprint(cfg: TrainConfig, paths: TrainPaths, device: torch.device) -> dict[str, Any]:
    """What must match for a checkpoint to be resumed: params, data bytes, training code, device type."""
    code = hashlib.sha256()
    for path in stage_code("train"):  # the train stage's code deps in dvc.yaml: one list for DVC and for resume
        code.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    config = {k: v for k, v in to_dict(cfg).items() if k not in TIMING_PARAMS}
    return {
        "config": config,
        "data": {"train": file_sha256(paths.train_data), "test": file_sha256(paths.test_data)},
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


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` atomically, or raise ``ValueError`` naming the first non-finite tensor (nothing written)."""
    bad = first_nonfinite(state)  # covers the loss sums since the last metric read and every weight
    if bad is not None:
        raise ValueError(bad)
    torch_save_atomic({"format": CHECKPOINT_FORMAT, **state}, path)


def first_nonfinite(tree: Any, where: str = "") -> str | None:
    """The key path of the first floating-point tensor in ``tree`` holding a NaN or an infinity, else None."""
    if isinstance(tree, torch.Tensor):
        return where if tree.is_floating_point() and not bool(torch.isfinite(tree).all()) else None
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, (list, tuple)) else ()
    for key, value in items:
        found = first_nonfinite(value, f"{where}/{key}" if where else str(key))
        if found is not None:
            return found
    return None


def rng_states(device: torch.device, shuffle_state: torch.Tensor, noise: torch.Generator) -> dict[str, Any]:
    """Every random stream of a run: torch's global one, the device's, the epoch shuffle and the step noise."""
    device_state = None
    if device.type == "cuda":
        device_state = torch.cuda.get_rng_state(device)
    elif device.type == "mps":
        device_state = torch.mps.get_rng_state()
    return {
        "torch": torch.get_rng_state(),
        "device": device_state,
        "shuffle": shuffle_state,
        "noise": noise.get_state(),
    }


def set_rng_states(
    states: dict[str, Any], device: torch.device, shuffle: torch.Generator, noise: torch.Generator
) -> None:
    torch.set_rng_state(states["torch"])
    if states["device"] is not None:
        if device.type == "cuda":
            torch.cuda.set_rng_state(states["device"], device)
        elif device.type == "mps":
            torch.mps.set_rng_state(states["device"])
    shuffle.set_state(states["shuffle"])
    noise.set_state(states["noise"])
