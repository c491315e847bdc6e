"""Reliability of the train stage: divergence, signals, kills mid-write, concurrent `dvc repro`, untrusted files.

Signals and kills hit real stage processes at exact iterations through a fault-injection ``sitecustomize``
(written to a temp folder and put on PYTHONPATH, like tests/fault_injection/); every interrupted run is then
resumed and must end bit-identical to an uninterrupted reference run (weights, samples, metric curves).
Data are small synthetic splits and models are tiny: the module takes about two minutes on 2 cores, mostly
torch imports in the stage subprocesses and the DVC CLI (the two DVC tests are marked slow).
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import math
import os
import re
import runpy
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import BIN, REPO, dvc, make_repo, stage_env
from helpers import (
    SMALL,
    STAGE,
    assert_same_state,
    load_state,
    make_project,
    read_tsv,
    run_train,
    small_cfg,
    write_split,
)
from test_bad_inputs import evil_pickle

import wgan.training.checkpoint
import wgan.training.loop as wgan_train
from wgan.classifier.classifier import Classifier
from wgan.data.model_file import load_model
from wgan.data.prepared import load_prepared
from wgan.data.samples import load_samples
from wgan.errors import UserError
from wgan.fileio import torch_load_safe
from wgan.models.networks import Critic, Generator
from wgan.paths import CHECKPOINT, TrainPaths
from wgan.training.checkpoint import CHECKPOINT_FORMAT, load_checkpoint
from wgan.training.live import M_HELDOUT, M_RATE
from wgan.training.loop import TrainResult, train
from wgan.training.step import M_CRITIC, M_GENERATOR, M_WASSERSTEIN

# 512 images in batches of 16: 32 iterations an epoch, 160 in all, epoch-end checkpoints at 32, 64, 96, 128
RUN = {"epochs": 5, "batch_size": 16, "log_every": 10, "sample_interval": 25}
N_TRAIN = 512
PER_EPOCH = 32

HOOK = '''\
"""Fault injection for tests/test_reliability.py (a stage subprocess loads it through PYTHONPATH).

WGAN_FAULT=signal: at iteration WGAN_FAULT_AT the train stage sends itself the signal WGAN_FAULT_SIGNAL.
WGAN_FAULT=gate: at iteration WGAN_FAULT_AT it creates WGAN_FAULT_MARK, then waits for WGAN_FAULT_RELEASE.
WGAN_FAULT=stall-checkpoint: checkpoint write number WGAN_FAULT_AT stops halfway through the file,
creates WGAN_FAULT_MARK and hangs until killed.
WGAN_FAULT=kill-writing: the process SIGKILLs itself as it starts writing the file named WGAN_FAULT_FILE.
Iterations are the train stage's progress-bar updates (one per iteration); other processes (dvc) are untouched.
"""

import os
import re
import signal
import sys
import time

MODE = os.environ.get("WGAN_FAULT")
AT = int(os.environ.get("WGAN_FAULT_AT", "0"))


def _touch(path):
    open(path, "w").close()


if MODE in ("signal", "gate"):
    import tqdm

    _update = tqdm.tqdm.update
    _done = [0]

    def _counting_update(self, n=1):
        if sys.argv[0].endswith("train.py"):
            _done[0] += n
            if _done[0] == AT and MODE == "signal":
                os.kill(os.getpid(), signal.Signals[os.environ["WGAN_FAULT_SIGNAL"]])
            elif _done[0] == AT:
                _touch(os.environ["WGAN_FAULT_MARK"])
                deadline = time.monotonic() + 120
                while not os.path.exists(os.environ["WGAN_FAULT_RELEASE"]) and time.monotonic() < deadline:
                    time.sleep(0.02)
        return _update(self, n)

    tqdm.tqdm.update = _counting_update

elif MODE == "stall-checkpoint":
    import io

    import torch

    _save = torch.save
    _writes = [0]

    def _stalling_save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("format") == "wgan-checkpoint-v1":
            _writes[0] += 1
            if _writes[0] == AT:
                buf = io.BytesIO()
                _save(obj, buf, *args, **kwargs)
                f.write(buf.getvalue()[: buf.tell() // 2])
                f.flush()
                _touch(os.environ["WGAN_FAULT_MARK"])
                time.sleep(600)
        return _save(obj, f, *args, **kwargs)

    torch.save = _stalling_save

elif MODE == "kill-writing":
    import torch

    _save = torch.save

    def _killing_save(obj, f, *args, **kwargs):
        # atomic writes go to ".NAME.<random>.tmp" next to NAME
        if os.path.basename(getattr(f, "name", "")).startswith("." + os.environ["WGAN_FAULT_FILE"] + "."):
            os.kill(os.getpid(), signal.SIGKILL)
        return _save(obj, f, *args, **kwargs)

    torch.save = _killing_save
'''


# ----------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def hook_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fault_hook")
    (folder / "sitecustomize.py").write_text(HOOK)
    return folder


def _rooted(root: Path) -> TrainPaths:
    """The stage's paths under ``root`` (so a reference run needs no chdir)."""
    default = TrainPaths()
    return TrainPaths(**{f.name: root / getattr(default, f.name) for f in dataclasses.fields(TrainPaths)})


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """In-process runs use the stage subprocesses' single thread, so the floating-point results match."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., tuple[Path, TrainResult]]:
    """Uninterrupted runs, one per (n_train, params), made once and shared by the tests of this module."""
    runs: dict[str, tuple[Path, TrainResult]] = {}

    def get(n_train: int, **params: Any) -> tuple[Path, TrainResult]:
        key = repr((n_train, sorted(params.items())))
        if key not in runs:
            root = make_project(tmp_path_factory.mktemp("reference"), n_train=n_train, **params)
            with _one_thread():
                runs[key] = root, train(small_cfg(**params), _rooted(root), torch.device("cpu"), log=lambda _: None)
        return runs[key]

    return get


def _assert_same_run(reference: tuple[Path, TrainResult], root: Path, curves: bool = True) -> None:
    """The run in ``root`` (a stage's outputs) is bit-identical to the uninterrupted ``reference``."""
    ref_root, ref = reference
    assert_same_state(ref.generator.state_dict(), load_state(root / "models/generator.pt"))
    assert_same_state(ref.critic.state_dict(), load_state(root / "models/critic.pt"))
    samples = torch_load_safe(root / "models/samples.pt", "samples", "")
    assert torch.equal(ref.samples.to_payload()["images"], samples["images"])
    assert ref.samples.iteration == samples["iteration"].tolist()
    for name in (M_CRITIC, M_GENERATOR, M_WASSERSTEIN, M_HELDOUT) if curves else ():  # the rate is timing
        tsv = f"dvclive/plots/metrics/{name}.tsv"
        assert read_tsv(ref_root / tsv) == read_tsv(root / tsv), name


def _run_stage_here(root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    """Run the stage script in this process (no torch import to wait for); return its stdout."""
    monkeypatch.chdir(root)
    monkeypatch.setenv("WGAN_DEVICE", "cpu")
    capsys.readouterr()
    with _one_thread():
        runpy.run_path(str(STAGE), run_name="__main__")  # returns normally on success
    return capsys.readouterr().out


def _fault_env(hook_dir: Path, **fault: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"WGAN_DEBUG", "MNIST_DIR"}}
    pythonpath = f"{hook_dir}{os.pathsep}{REPO / 'src'}"
    return env | {"OMP_NUM_THREADS": "1", "WGAN_DEVICE": "cpu", "PYTHONPATH": pythonpath} | fault


@contextlib.contextmanager
def _background(args: list[str], cwd: Path, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[str]]:
    """A process with its output in ``log``, killed at the end of the block if it is still running.

    It gets its own process group, as a terminal's foreground job has (Ctrl-C signals the whole group).
    """
    with open(log, "w") as out:
        proc = subprocess.Popen(
            args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)


def _wait_for(path: Path, proc: subprocess.Popen[str], log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"exited {proc.returncode} early:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"timed out waiting for {path.name}:\n{log.read_text()}"
        time.sleep(0.02)


def _checkpoint(root: Path) -> dict[str, Any]:
    return torch_load_safe(root / CHECKPOINT, "checkpoint", "")


def _no_outputs(root: Path) -> None:
    for name in ("generator.pt", "critic.pt", "samples.pt"):
        assert not (root / "models" / name).exists(), name


# ----------------------------------------------------------------------------- NaN / inf


def test_infinite_loss_from_params_stops_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real route to an overflow: gp_lambda = 1e39 is inf in float32, so the critic loss is never finite."""
    root = make_project(tmp_path, loss="wgan-gp", optimizer="adam", gp_lambda=1e39, log_every=5, epochs=3)
    monkeypatch.delenv("WGAN_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        _run_stage_here(root, monkeypatch, capsys)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith("error: training diverged: train/critic_loss = nan at iteration 5 (finite at iteration 0,")
    assert "lower train.lr (now 5e-05), or lower train.gp_lambda (now 1e+39); no checkpoint saved" in err
    assert not (root / CHECKPOINT).exists()
    _no_outputs(root)


def _poison_after_first_checkpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """From the first iteration after the first checkpoint on, the critic outputs NaN (as after an overflow).

    A forward hook on the critic module, so it works whatever the training step does inside.
    """
    armed = False
    build, save = wgan_train.build_models, wgan.training.checkpoint.torch_save_atomic

    def poisoned_build(cfg: Any, device: torch.device) -> Any:
        generator, critic = build(cfg, device)
        critic.register_forward_hook(lambda module, args, out: out * math.nan if armed else None)
        return generator, critic

    def arming_save(obj: Any, path: Any) -> None:
        nonlocal armed
        save(obj, path)
        armed = armed or obj.get("format") == CHECKPOINT_FORMAT

    monkeypatch.setattr(wgan_train, "build_models", poisoned_build)
    monkeypatch.setattr(wgan.training.checkpoint, "torch_save_atomic", arming_save)


@pytest.mark.parametrize(
    ("log_every", "detected"),
    [
        (5, "train/critic_loss = nan at iteration 15 (finite at iteration 10,"),  # at the next metric read
        (100, "the training state has a NaN or infinity in generator/"),  # at the next checkpoint (20)
    ],
    ids=["at-metric-read", "at-checkpoint"],
)
def test_nan_stops_keeps_the_last_good_checkpoint_and_resumes(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    reference: Callable[..., tuple[Path, TrainResult]],
    log_every: int,
    detected: str,
) -> None:
    params = {"epochs": 3, "log_every": log_every}  # 320 images in batches of 32: 10 iterations an epoch
    root = make_project(tmp_path, **params)
    monkeypatch.delenv("WGAN_DEBUG", raising=False)
    with monkeypatch.context() as patch:
        _poison_after_first_checkpoint(patch)
        with pytest.raises(SystemExit) as exit_info:
            _run_stage_here(root, monkeypatch, capsys)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith(f"error: training diverged: {detected}"), err
    assert "lower train.lr (now 5e-05), or use train.loss: wgan-gp" in err
    assert err.endswith(f"{CHECKPOINT} (iteration 10) is kept")
    _no_outputs(root)
    assert not list((root / "models").glob(".*.tmp"))

    ckpt = _checkpoint(root)  # the last good one: loadable, finite, resumable
    assert ckpt["iteration"] == 10 and not ckpt["finished"]
    assert all(torch.isfinite(v).all() for part in ("generator", "critic") for v in ckpt[part].values())
    out = _run_stage_here(root, monkeypatch, capsys)  # the fault is gone (as after fixing the cause)
    assert f"resuming from {CHECKPOINT}: 1 epochs (10 iterations) done" in out
    _assert_same_run(reference(320, **params), root, curves=False)  # the poisoned run logged no NaN point


# ----------------------------------------------------------------------------- SIGINT / SIGTERM / SIGKILL


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "code", "ema"),
    [
        (signal.SIGINT, 130, {}),
        (signal.SIGTERM, 143, {}),
        # the averaged generator's two cases: `make test-long` (signals are the plain cases' job in `make test`)
        pytest.param(signal.SIGTERM, 143, {"ema_decay": 0.9}, marks=pytest.mark.long),
        pytest.param(signal.SIGTERM, 143, {"ema_decay": 0.9, "ema_start": 3}, marks=pytest.mark.long),  # resumed
    ],  # before the average starts
    ids=["SIGINT", "SIGTERM", "SIGTERM-averaged-generator", "SIGTERM-averaging-starts-later"],
)
def test_signal_saves_mid_epoch_and_resume_is_bit_identical(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    hook_dir: Path,
    reference: Callable[..., tuple[Path, TrainResult]],
    sig: signal.Signals,
    code: int,
    ema: dict[str, float],
) -> None:
    run = RUN | ema  # averaged: generator.pt is the average
    root = make_project(tmp_path, n_train=N_TRAIN, **run)
    at = 2 * PER_EPOCH + 6  # mid-epoch: the checkpoint must hold the position inside the epoch
    env = _fault_env(hook_dir, WGAN_FAULT="signal", WGAN_FAULT_AT=str(at), WGAN_FAULT_SIGNAL=sig.name)
    proc = subprocess.run([sys.executable, str(STAGE)], cwd=root, env=env, capture_output=True, text=True, timeout=300)

    assert proc.returncode == code, proc.stderr
    assert proc.stderr.strip() == (
        f"stopped by {sig.name} at iteration {at} of {5 * PER_EPOCH}; {CHECKPOINT} is saved: "
        "run `dvc repro train` (or this stage) again to resume"
    )
    ckpt = _checkpoint(root)
    assert ckpt["iteration"] == at and not ckpt["finished"]
    assert ("ema" in ckpt["step"]) == bool(ema)
    _no_outputs(root)

    out = _run_stage_here(root, monkeypatch, capsys)
    assert f"resuming from {CHECKPOINT}: 2 epochs ({at} iterations) done" in out
    _assert_same_run(reference(N_TRAIN, **run), root)


@pytest.mark.slow
def test_sigkill_during_a_checkpoint_write_keeps_the_previous_one(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    hook_dir: Path,
    reference: Callable[..., tuple[Path, TrainResult]],
) -> None:
    root = make_project(tmp_path, n_train=N_TRAIN, **RUN)
    mark = tmp_path / "half-written"
    env = _fault_env(hook_dir, WGAN_FAULT="stall-checkpoint", WGAN_FAULT_AT="2", WGAN_FAULT_MARK=str(mark))
    log = tmp_path / "stage.log"
    with _background([sys.executable, str(STAGE)], root, env, log) as proc:
        _wait_for(mark, proc, log)  # the second checkpoint (iteration 64) is half on disk
        (partial,) = (root / CHECKPOINT.parent).glob(".checkpoint.pt.*.tmp")
        assert partial.stat().st_size > 0
        with pytest.raises(UserError, match="cannot be loaded"):
            torch_load_safe(partial, "checkpoint", "")
        assert _checkpoint(root)["iteration"] == PER_EPOCH  # the rename has not happened: still the first
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert partial.exists()  # what a SIGKILL leaves behind
    assert _checkpoint(root)["iteration"] == PER_EPOCH
    _no_outputs(root)

    out = _run_stage_here(root, monkeypatch, capsys)
    assert f"removed {CHECKPOINT.parent / partial.name}, left by an interrupted write" in out
    assert f"resuming from {CHECKPOINT}: 1 epochs ({PER_EPOCH} iterations) done" in out
    assert not list((root / CHECKPOINT.parent).glob(".*.tmp"))
    _assert_same_run(reference(N_TRAIN, **RUN), root)


@pytest.mark.slow
def test_sigkill_while_writing_the_outputs_loses_no_training(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    hook_dir: Path,
    reference: Callable[..., tuple[Path, TrainResult]],
) -> None:
    """Killed after training, between writing generator.pt and critic.pt: the rerun only writes the outputs."""
    root = make_project(tmp_path, n_train=N_TRAIN, **RUN)
    env = _fault_env(hook_dir, WGAN_FAULT="kill-writing", WGAN_FAULT_FILE="critic.pt")
    proc = subprocess.run([sys.executable, str(STAGE)], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (root / "models/generator.pt").exists() and not (root / "models/critic.pt").exists()
    ckpt = _checkpoint(root)
    assert ckpt["iteration"] == 5 * PER_EPOCH and not ckpt["finished"]
    rates = read_tsv(root / f"dvclive/plots/metrics/{M_RATE}.tsv")  # timings: a retrained run would differ

    out = _run_stage_here(root, monkeypatch, capsys)
    assert "removed models/.critic.pt." in out
    assert f"resuming from {CHECKPOINT}: 5 epochs ({5 * PER_EPOCH} iterations) done" in out
    assert "training had finished before its outputs were written; writing them" in out
    assert read_tsv(root / f"dvclive/plots/metrics/{M_RATE}.tsv") == rates
    assert _checkpoint(root)["finished"]
    _assert_same_run(reference(N_TRAIN, **RUN), root)


# ----------------------------------------------------------------------------- through DVC


def _dvc_repo(tmp_path: Path) -> Path:
    """A git + DVC copy of the project with the small train params and synthetic prepared data.

    `dvc repro --single-item train` then runs train alone (download and prepare would need MNIST).
    """
    repo = make_repo(tmp_path / "repo", {"train": {**SMALL, **RUN}, "render": {"n_images": 4, "nrow": 2}})  # <= n_fixed
    write_split(repo / "data/prepared/train.pt", N_TRAIN, seed=0)  # the data of test_train's make_project
    write_split(repo / "data/prepared/test.pt", 64, seed=1)
    dvc(repo, "repro", "params")  # the validated-params marker every stage depends on
    return repo


def _dvc_env(repo: Path, hook_dir: Path, **fault: str) -> dict[str, str]:
    env = stage_env(repo)
    return env | {"OMP_NUM_THREADS": "1", "PYTHONPATH": f"{hook_dir}{os.pathsep}{env['PYTHONPATH']}"} | fault


REPRO = [str(BIN / "dvc"), "repro", "--single-item", "train"]


def _gated_at_40(repo: Path, hook_dir: Path, tmp_path: Path) -> tuple[Path, Path, Path, dict[str, str]]:
    """Files and environment for a `dvc repro` whose stage pauses at iteration 40 until `release` exists.

    Returns (mark: created when the stage reaches the gate, release, log of the run, env).
    """
    mark, release, log = tmp_path / "reached", tmp_path / "release", tmp_path / "first.log"
    gate = {"WGAN_FAULT_AT": "40", "WGAN_FAULT_MARK": str(mark), "WGAN_FAULT_RELEASE": str(release)}
    return mark, release, log, _dvc_env(repo, hook_dir, WGAN_FAULT="gate", **gate)


@pytest.mark.slow
@pytest.mark.long  # two `dvc repro` runs, one paused until the other is refused
def test_a_second_dvc_repro_is_refused_while_the_first_finishes(
    tmp_path: Path, hook_dir: Path, reference: Callable[..., tuple[Path, TrainResult]]
) -> None:
    repo = _dvc_repo(tmp_path)
    mark, release, log, env = _gated_at_40(repo, hook_dir, tmp_path)
    with _background(REPRO, repo, env, log) as first:
        _wait_for(mark, first, log)  # the first is training, inside `dvc repro`
        start = time.monotonic()
        second = subprocess.run(REPRO, cwd=repo, env=stage_env(repo), capture_output=True, text=True, timeout=120)
        took = time.monotonic() - start
        assert first.poll() is None  # the refusal came while the first was still running
        release.touch()
        first.wait(timeout=300)
    assert second.returncode != 0
    assert "is busy, it is being blocked by" in second.stderr and "dvc repro" in second.stderr, second.stderr
    assert "Running stage" not in second.stdout and took < 60
    assert first.returncode == 0, log.read_text()
    assert "Updating lock file 'dvc.lock'" in log.read_text()
    _assert_same_run(reference(N_TRAIN, **RUN), repo)


@pytest.mark.slow
@pytest.mark.long  # a `dvc repro` interrupted, then resumed, under each shell
@pytest.mark.parametrize("shell", ["/bin/bash", "/bin/sh"])
def test_ctrl_c_under_dvc_repro_then_repro_resumes(
    tmp_path: Path, hook_dir: Path, reference: Callable[..., tuple[Path, TrainResult]], shell: str
) -> None:
    """What a terminal does on Ctrl-C: SIGINT to the whole foreground process group (dvc and the stage).

    DVC runs the stage's cmd with ``$SHELL -c`` (``/bin/sh`` when SHELL is unset, as under CI). bash execs a lone
    command, so DVC sees the stage's own exit code 130; dash (Debian's sh) stays as the parent, waits for the
    stage, then dies of the same SIGINT, so DVC says -2. Either way the stage saved its checkpoint first.
    """
    repo = _dvc_repo(tmp_path)
    mark, release, log, env = _gated_at_40(repo, hook_dir, tmp_path)
    env["SHELL"] = shell
    with _background(REPRO, repo, env, log) as first:
        _wait_for(mark, first, log)
        os.killpg(first.pid, signal.SIGINT)
        release.touch()  # the signal is already pending: the stage stops at this very iteration
        first.wait(timeout=120)
    out = log.read_text()
    assert first.returncode != 0, out
    saved = out.index(f"stopped by SIGINT at iteration 40 of 160; {CHECKPOINT} is saved")
    failed = re.search(r"failed to run: python stages/train.py, exited with (130|-2)\n", out)
    assert failed is not None, out
    assert saved < failed.start()  # DVC reported (and unlocked) only after the checkpoint was saved
    assert "Traceback" not in out
    _no_outputs(repo)

    resumed = subprocess.run(
        REPRO, cwd=repo, env=stage_env(repo) | {"OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming from {CHECKPOINT}: 1 epochs (40 iterations) done" in resumed.stdout
    _assert_same_run(reference(N_TRAIN, **RUN), repo)


# ----------------------------------------------------------------------------- untrusted files

LOADERS: dict[str, Callable[[Path], object]] = {
    "load_prepared": load_prepared,
    "load_model-generator": lambda p: load_model(p, Generator),
    "load_model-critic": lambda p: load_model(p, Critic),
    "load_model-classifier": lambda p: load_model(p, Classifier),
    "load_samples": load_samples,
}


@pytest.mark.parametrize("loader", LOADERS.values(), ids=LOADERS.keys())
def test_crafted_pickle_runs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loader: Callable) -> None:
    monkeypatch.chdir(tmp_path)
    crafted, marker = tmp_path / "crafted.pt", tmp_path / "PWNED"
    evil_pickle(crafted)
    torch.load(crafted, weights_only=False)  # the control: unpickled unsafely, the file does run its command
    assert marker.exists()
    marker.unlink()
    with pytest.raises(UserError, match="cannot be loaded"):
        loader(crafted)
    assert not marker.exists()


def test_crafted_checkpoint_runs_nothing_and_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    evil_pickle(tmp_path / CHECKPOINT)
    messages: list[str] = []
    assert load_checkpoint(CHECKPOINT, {}, messages.append) is None
    assert len(messages) == 1 and f"checkpoint file {CHECKPOINT} cannot be loaded" in messages[0]
    assert messages[0].endswith("training from scratch")
    assert not (tmp_path / "PWNED").exists()


def _is_constant(node: ast.expr | None, value: bool) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def _unsafe_loads(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Calls that could unpickle code: torch.load without weights_only=True, pickle.load(s), np.load(allow_pickle)."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
        kwargs = {k.arg: k.value for k in node.keywords}
        if (owner, node.func.attr) == ("torch", "load") and not _is_constant(kwargs.get("weights_only"), True):
            yield node.lineno, "torch.load without weights_only=True"
        if owner in ("pickle", "dill", "joblib") and node.func.attr in ("load", "loads"):
            yield node.lineno, f"{owner}.{node.func.attr}"
        pickled = kwargs.get("allow_pickle", ast.Constant(False))
        if owner in ("np", "numpy") and node.func.attr == "load" and not _is_constant(pickled, False):
            yield node.lineno, "numpy.load with allow_pickle"


def test_every_load_in_the_code_is_weights_only() -> None:
    files = sorted(p for folder in ("src", "stages", "benchmarks") for p in (REPO / folder).rglob("*.py"))
    assert any(p.name == "fileio.py" for p in files)
    found = [
        f"{path.relative_to(REPO)}:{line}: {what}"
        for path in files
        for line, what in _unsafe_loads(ast.parse(path.read_text()))
    ]
    assert found == []
    # the scan itself finds what it looks for
    unsafe = "torch.load(f)\ntorch.load(f, weights_only=False)\npickle.loads(b)\nnp.load(f, allow_pickle=True)"
    assert [line for line, _ in _unsafe_loads(ast.parse(unsafe))] == [1, 2, 3, 4]
    safe = "torch.load(f, map_location='cpu', weights_only=True)\nnp.load(f)\nNumpyOnlyUnpickler(f).load()"
    assert list(_unsafe_loads(ast.parse(safe))) == []


@pytest.mark.slow
def test_a_damaged_checkpoint_is_one_line_and_deleting_it_as_told_trains_from_scratch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint of this very run (its fingerprint matches) whose weights are damaged: the one line names the
    recovery, and that recovery (delete it) gives the uninterrupted run's weights."""
    cfg = small_cfg(epochs=2)
    reference = run_train(make_project(tmp_path / "reference", epochs=2), monkeypatch, cfg)
    root = make_project(tmp_path / "damaged", epochs=2)
    run_train(root, monkeypatch, cfg)
    ckpt = torch.load(root / CHECKPOINT, weights_only=True)
    # unfinished, listing no kept generator (the run delivered its kept files), and a generator of other shapes
    ckpt |= {"finished": False, "kept": {}, "generator": {"not": torch.zeros(1)}}
    torch.save(ckpt, root / CHECKPOINT)
    with pytest.raises(UserError, match="is damaged .*; delete it to train from scratch") as error:
        run_train(root, monkeypatch, cfg)
    assert "\n" not in str(error.value)
    (root / CHECKPOINT).unlink()  # the recovery the message names
    result = run_train(root, monkeypatch, cfg)
    assert_same_state(reference.generator.state_dict(), result.generator.state_dict())
    assert_same_state(reference.critic.state_dict(), result.critic.state_dict())
