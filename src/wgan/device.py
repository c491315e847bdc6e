"""Which device to train on: the fastest one present, unless ``WGAN_DEVICE`` says otherwise.

The device is not a tracked param, so moving the project to a GPU box does not by itself rerun a stage. It does
change the experiment: a CUDA run draws its random streams from Philox where the CPU uses MT19937, and its fp32
matmuls run in TF32, so the same params give another run. The train stage therefore records the device and
precision mode in its metrics (``wgan.training.live.run_record``), ``wgan compare`` never pools seeds across
them, and a checkpoint resumes only on the device type that wrote it (``wgan.training.checkpoint``).
"""

from __future__ import annotations

import os

import torch

from wgan.errors import UserError

ENV_VAR = "WGAN_DEVICE"


def choose_device(override: str | None = None) -> torch.device:
    """CUDA when available, else Apple MPS, else CPU; ``override`` (default: ``$WGAN_DEVICE``) wins."""
    requested = os.environ.get(ENV_VAR, "") if override is None else override
    if requested.strip():
        return _validate(requested.strip())
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _validate(requested: str) -> torch.device:
    hint = f"set {ENV_VAR} to cpu, cuda, cuda:N or mps, or unset it to pick automatically"
    try:
        device = torch.device(requested)
    except (RuntimeError, ValueError) as exc:
        raise UserError(f"{ENV_VAR}={requested!r} is not a device name; {hint}") from exc
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(f"{ENV_VAR}={requested!r} but CUDA is not available here; {hint}")
        if device.index is not None and device.index >= count:
            raise UserError(f"{ENV_VAR}={requested!r} but only {count} CUDA device(s) exist; {hint}")
        return device
    if device.type == "mps":
        if not _mps_available():
            raise UserError(f"{ENV_VAR}={requested!r} but Apple MPS is not available here; {hint}")
        return device
    raise UserError(f"{ENV_VAR}={requested!r} is not a supported device type; {hint}")
