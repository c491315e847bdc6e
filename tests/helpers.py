"""The tests' shared toolbox for training: a small model config, a synthetic project, readers of what a run wrote.

DVC-level helpers (a temporary git + DVC repo, the real CLI) live in conftest.py beside the fixtures.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import REPO

from wgan.config import TrainConfig, parse_section
from wgan.data.kept import list_kept
from wgan.data.prepared import save_prepared
from wgan.fileio import torch_load_safe
from wgan.models.networks import build_models
from wgan.paths import CHECKPOINT, KEPT
from wgan.training.loop import train
from wgan.training.step import WGANStep

STAGE = REPO / "stages" / "train.py"
SMALL = {"g_hidden": [32, 64], "d_hidden": [64, 32], "latent_dim": 16, "batch_size": 32, "n_fixed": 8}


def small_cfg(**overrides: Any) -> TrainConfig:
    return parse_section("train", {**SMALL, **overrides})


def write_split(path: Path, n: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g)
    save_prepared(path, images, torch.randint(0, 10, (n,), generator=g), 0.5, 0.5)


def make_project(root: Path, n_train: int = 320, **train_params: Any) -> Path:
    """A temp project: synthetic prepared splits and a params.yaml with a small train section."""
    write_split(root / "data/prepared/train.pt", n_train, seed=0)
    write_split(root / "data/prepared/test.pt", 64, seed=1)
    params = {"prepare": {"mean": 0.5, "std": 0.5}, "train": {**SMALL, **train_params}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def load_state(path: Path) -> dict[str, torch.Tensor]:
    return torch_load_safe(path, "model", "")["state_dict"]


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def toy_batch(n: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def small_step(**overrides: Any) -> WGANStep:
    cfg = small_cfg(**overrides)
    generator, critic = build_models(cfg, torch.device("cpu"))
    return WGANStep(cfg, generator, critic, torch.Generator().manual_seed(0))


def clone_params(params: Any) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def run_train(root: Path, monkeypatch: pytest.MonkeyPatch, cfg: TrainConfig) -> Any:
    monkeypatch.chdir(root)
    return train(cfg, device=torch.device("cpu"))


def start_stage(root: Path) -> subprocess.Popen[str]:
    """The train stage script in ``root`` as a subprocess on one CPU thread, its output (both streams) piped."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WGAN_DEVICE": "cpu"}
    return subprocess.Popen(
        [sys.executable, str(STAGE)], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def epochs_done(path: Path) -> int:
    """The epochs done in the checkpoint at ``path`` (-1 while there is none); it must not be finished yet."""
    try:
        ckpt = torch.load(path, weights_only=True)
    except (OSError, RuntimeError, EOFError):  # not there yet, or replaced while reading
        return -1
    assert not ckpt["finished"], "the run finished before it could be killed; make it longer"
    return int(ckpt["epochs_done"])


def kill_after_epochs(root: Path, epochs: int, timeout_s: float = 240) -> None:
    """Start the train stage in ``root`` and SIGKILL it once its checkpoint holds ``epochs`` epochs."""
    proc = start_stage(root)
    deadline = time.monotonic() + timeout_s
    while epochs_done(root / CHECKPOINT) < epochs:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)


def kept_generators(root: Path) -> dict[int, Path]:
    """The generators a run under ``root`` kept (``train.keep_every``), by epoch."""
    return dict(list_kept(root / KEPT))
