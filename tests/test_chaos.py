"""Chaos: the train stage under `dvc repro`, killed or hung at seeded random points, always ends in the run it
would have made uninterrupted, with a clean `dvc status`.

Each point is one fault from tests/fault_injection/sitecustomize.py, fired once: SIGKILL of the whole stage at an
iteration, halfway through a checkpoint write, while an output is written, or of `dvc` between the stage's end and
its dvc.lock entry; SIGKILL or SIGSTOP of one training process under torchrun's restarts (``WGAN_MAX_RESTARTS=1``);
SIGKILL of `dvc` and the stage together (1 or 2 processes, no restarts: a power cut, but for torchrun's workers).
A stage that failed is run again with `dvc repro` (the restarts need no rerun). Then the models, the samples and
every metric point equal the reference run's, bit for bit, of the same process count (the order of float sums
depends on it), and `dvc status` says nothing changed.

``make test`` tries the two points the reliability docs promise (``must_hold_points``); ``make chaos`` tries
``CHAOS_POINTS`` points drawn from seed ``CHAOS_SEED`` (``chaos_points``). With ``CHAOS_REPORT`` set, each point
appends its recovery time (from the fault to the finished run) to that file.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import BIN, REPO, dvc, make_repo, stage_env
from helpers import SMALL, STAGE, assert_same_state, load_state, make_project, read_tsv, small_cfg, write_split
from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

from wgan.fileio import torch_load_safe
from wgan.launch import blamed
from wgan.paths import CHECKPOINT, TrainPaths
from wgan.training.checkpoint import run_fingerprint
from wgan.training.live import M_HELDOUT
from wgan.training.step import M_CRITIC, M_GENERATOR, M_WASSERSTEIN

pytestmark = pytest.mark.slow

# 384 images in batches of 32: 12 iterations an epoch, 48 in all, epoch-end checkpoints at 12, 24, 36; under
# 2 processes the ranks agree every 10 iterations, so a timed checkpoint there is mid-epoch
RUN = {"epochs": 4, "log_every": 5, "sample_interval": 15}
N_TRAIN, TOTAL = 384, 48
FAULTS = REPO / "tests" / "fault_injection"
REPRO = [str(BIN / "dvc"), "repro", "--single-item", "train"]
REPRO_GROUP = ["sh", "-c", 'export WGAN_FAULT_PGID=$$; exec "$@"', "sh", *REPRO]  # $$: the new group's id
TIMEOUT_S = 10  # WGAN_DIST_TIMEOUT for the runs here: a SIGSTOPped rank is named after this long


def chaos_points(count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` fault points drawn from ``seed``: what fires where, the process count, the checkpoint clock."""
    rng = random.Random(seed)
    points = []
    for _ in range(count):
        kind = rng.choice(["iteration", "checkpoint", "deliver", "lock", "rank", "rank", "group"])
        point: dict[str, Any] = {"kind": kind, "nproc": 1, "minutes": rng.choice([0, 0.001])}  # 0.001: 60 ms
        if kind == "iteration":
            point["at"] = rng.randrange(1, TOTAL + 1)
        elif kind == "checkpoint":
            point["at"] = rng.randrange(1, 4)  # one of the epoch-end checkpoints (or a timed one before it)
        elif kind == "deliver":
            point["file"] = rng.choice(["generator.pt", "critic.pt", "samples.pt"])
        elif kind == "rank":  # one worker under torchrun's restarts; with one process it is rank 0
            point |= {"nproc": rng.choice([1, 2]), "at": rng.randrange(1, TOTAL + 1)}
            point["signal"] = rng.choice(["KILL", "STOP"]) if point["nproc"] == 2 else "KILL"
        elif kind == "group":  # `dvc` and the stage at once, at an iteration of one rank, without restarts
            point |= {"nproc": rng.choice([1, 2]), "at": rng.randrange(1, TOTAL + 1)}
            point["rank"] = rng.randrange(point["nproc"])
        points.append(point)
    return points


def must_hold_points(seed: int) -> list[dict[str, Any]]:
    """What `make test` tries: a rank SIGKILLed at a random iteration under one restart, with 1 process (rank 0,
    the only one) and with 2 (rank 1, checkpointing every 60 ms too: the restart resumes mid-epoch)."""
    rng = random.Random(seed)
    return [
        {"kind": "rank", "nproc": nproc, "minutes": minutes, "at": rng.randrange(1, TOTAL + 1), "signal": "KILL"}
        for nproc, minutes in ((1, 0), (2, 0.001))
    ]


SEED, COUNT = int(os.environ.get("CHAOS_SEED", "0")), os.environ.get("CHAOS_POINTS")
POINTS = chaos_points(int(COUNT), SEED) if COUNT else must_hold_points(SEED)


def _point_id(point: dict[str, Any]) -> str:
    return "-".join(str(value) for value in point.values())


def _env(repo: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in stage_env(repo).items() if k not in {"WGAN_NPROC", "WGAN_TORCHRUN", "WGAN_MAX_RESTARTS"}}
    return env | {"OMP_NUM_THREADS": "1", "WGAN_DEVICE": "cpu", "WGAN_DIST_TIMEOUT": str(TIMEOUT_S)} | extra


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The uninterrupted stage's run folder for a process count, made once per module."""
    runs: dict[int, Path] = {}

    def get(nproc: int) -> Path:
        if nproc not in runs:
            root = make_project(tmp_path_factory.mktemp(f"reference{nproc}"), n_train=N_TRAIN, **RUN)
            env = _env(root, WGAN_NPROC=str(nproc), PYTHONPATH=str(REPO / "src"))
            proc = subprocess.run([sys.executable, str(STAGE)], cwd=root, env=env, capture_output=True, text=True)
            assert proc.returncode == 0, proc.stderr
            runs[nproc] = root
        return runs[nproc]

    return get


def assert_same_run(reference: Path, root: Path) -> None:
    """Bit-identical models and samples, and every metric point exactly once with the reference's values."""
    for name in ("generator.pt", "critic.pt"):
        assert_same_state(load_state(reference / "models" / name), load_state(root / "models" / name))
    ref, got = (torch_load_safe(r / "models/samples.pt", "samples", "") for r in (reference, root))
    assert torch.equal(ref["images"], got["images"]) and torch.equal(ref["iteration"], got["iteration"])
    for name in (M_CRITIC, M_GENERATOR, M_WASSERSTEIN, M_HELDOUT):  # not the rate: it is timing
        tsv = f"dvclive/plots/metrics/{name}.tsv"
        rows = read_tsv(root / tsv)
        assert len({row["step"] for row in rows}) == len(rows), f"{name}: a step logged twice"
        assert rows == read_tsv(reference / tsv), name


def _repo(tmp_path: Path, minutes: float) -> Path:
    """A git + DVC copy of the project: small train params and synthetic data (make_project's), params checked."""
    params = {"train": {**SMALL, **RUN, "checkpoint_minutes": minutes}, "render": {"n_images": 4, "nrow": 2}}
    repo = make_repo(tmp_path / "repo", params)
    write_split(repo / "data/prepared/train.pt", N_TRAIN, seed=0)
    write_split(repo / "data/prepared/test.pt", 64, seed=1)
    dvc(repo, "repro", "params")
    return repo


def _fault_env(repo: Path, point: dict[str, Any], once: Path) -> dict[str, str]:
    """The environment of the faulty `dvc repro`: the hook on PYTHONPATH and the point as WGAN_FAULT_*."""
    env = _env(repo)
    fault = {"WGAN_FAULT": point["kind"], "WGAN_FAULT_ONCE": str(once)}
    if point["kind"] == "rank":
        fault |= {"WGAN_FAULT": "iteration", "WGAN_FAULT_RANK": str(point["nproc"] - 1)}
        fault |= {"WGAN_FAULT_SIGNAL": point["signal"], "WGAN_NPROC": str(point["nproc"]), "WGAN_MAX_RESTARTS": "1"}
    if point["kind"] == "group":  # WGAN_FAULT_PGID: the shell that execs `dvc` says its own pid (REPRO_GROUP)
        fault |= {"WGAN_FAULT": "iteration", "WGAN_FAULT_RANK": str(point["rank"]), "WGAN_NPROC": str(point["nproc"])}
    if "at" in point:
        fault["WGAN_FAULT_AT"] = str(point["at"])
    if "file" in point:
        fault["WGAN_FAULT_FILE"] = point["file"]
    return env | fault | {"PYTHONPATH": f"{FAULTS}{os.pathsep}{env['PYTHONPATH']}"}


@pytest.mark.long  # 15-20 s a point: `make test-long` (and `make chaos`)
@pytest.mark.parametrize("point", POINTS, ids=[_point_id(p) for p in POINTS])
def test_every_kill_point_ends_in_the_uninterrupted_run(tmp_path: Path, reference: Any, point: dict[str, Any]) -> None:
    repo, once = _repo(tmp_path, point["minutes"]), tmp_path / "fired"
    # a "group" point kills the whole process group: `dvc` gets its own, apart from this test's
    command = REPRO_GROUP if point["kind"] == "group" else REPRO
    env = _fault_env(repo, point, once)
    first = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, start_new_session=True)
    log = first.stdout + first.stderr
    assert once.exists(), f"the fault never fired:\n{log}"
    if point["kind"] == "rank":  # torchrun's agent restarted the group: no rerun needed
        assert first.returncode == 0, log
        assert "restarting every training process from the last checkpoint (restart 1 of 1)" in log, log
        if point["signal"] == "KILL" and point["at"] > RUN["log_every"]:  # the agent says how far the run got
            said = re.search(r"killed by SIGKILL \(the run's last metric point: iteration (\d+)\)", log)
            assert said and point["at"] - RUN["log_every"] <= int(said[1]) <= point["at"], log
        for line in (line for line in log.splitlines() if "lost the others at iteration" in line):  # rank 0's
            assert line.endswith("torchrun's agent restarts every process from the last checkpoint"), line
        assert f"resuming from {CHECKPOINT}" in log or "restart 1 of the training processes" in log, log
    else:
        assert first.returncode != 0, log
        again = _env(repo, WGAN_NPROC=str(point["nproc"]))  # bit for bit needs the same process count
        rerun = subprocess.run(REPRO, cwd=repo, env=again, capture_output=True, text=True)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    recovery = time.time() - once.stat().st_mtime
    assert_same_run(reference(point["nproc"]), repo)
    status = dvc(repo, "status", "train").stdout
    assert "Data and pipelines are up to date" in status, status
    if os.environ.get("CHAOS_REPORT"):
        with open(os.environ["CHAOS_REPORT"], "a") as report:
            report.write(f"{_point_id(point)}\t{recovery:.1f}\n")


@pytest.mark.long  # waits out the 10 s collective timeout
def test_a_stopped_rank_ends_the_run_within_the_timeout_naming_it(tmp_path: Path) -> None:
    """SIGSTOP of rank 1 (no restarts): rank 0 names it after WGAN_DIST_TIMEOUT, the run ends well within the
    timeout plus 30 s, and the last checkpoint is intact and resumable."""
    root = make_project(tmp_path, n_train=N_TRAIN, **(RUN | {"epochs": 40}))  # 480 iterations: it cannot finish first
    once, timeout = tmp_path / "fired", 5
    fault = {"WGAN_FAULT": "iteration", "WGAN_FAULT_RANK": "1", "WGAN_FAULT_AT": "25", "WGAN_FAULT_SIGNAL": "STOP"}
    env = _env(root, WGAN_NPROC="2", WGAN_FAULT_ONCE=str(once), PYTHONPATH=f"{FAULTS}{os.pathsep}{REPO / 'src'}")
    env["WGAN_DIST_TIMEOUT"] = str(timeout)
    proc = subprocess.run([sys.executable, str(STAGE)], cwd=root, env=env | fault, capture_output=True, text=True)
    took = time.time() - once.stat().st_mtime
    assert took < timeout + 30, took
    assert proc.returncode == 3, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert lines[0].startswith("error: training process rank 0 of 2 lost the others at iteration 2"), lines
    assert f"(rank 1 did not answer within WGAN_DIST_TIMEOUT = {timeout} s)" in lines[0], lines
    assert "Traceback" not in proc.stderr, proc.stderr
    ckpt = torch_load_safe(root / CHECKPOINT, "checkpoint", "")
    assert ckpt["iteration"] == 24 and not ckpt["finished"]  # the last epoch end before the stop


@pytest.mark.long  # torchrun's agent with a restart allowed
def test_a_user_error_is_not_restarted(tmp_path: Path) -> None:
    """A NaN (gp_lambda = 1e39 is inf in float32) fails the same way after any restart: the agent stops at once."""
    root = make_project(tmp_path, loss="wgan-gp", optimizer="adam", gp_lambda=1e39, log_every=5, epochs=3)
    env = _env(root, WGAN_NPROC="2", WGAN_MAX_RESTARTS="3", PYTHONPATH=str(REPO / "src"))
    proc = subprocess.run([sys.executable, str(STAGE)], cwd=root, env=env, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "--max-restarts=3" in proc.stdout and "restart 1" not in proc.stderr + proc.stdout, proc.stderr
    assert proc.stderr.count("error: training diverged: train/critic_loss = nan at iteration 5") == 1, proc.stderr


def _failure(exitcode: int, late: bool = False) -> ProcessFailure:
    failure = ProcessFailure(local_rank=0, pid=100 + exitcode, exitcode=exitcode, error_file="/nonexistent")
    failure.timestamp += 5 if late else 0  # SIGKILLed by the agent after its grace
    return failure


@pytest.mark.parametrize(
    ("failures", "cause"),
    [
        ({0: _failure(3), 1: _failure(-9)}, 1),  # rank 1 died; rank 0 then lost it
        ({0: _failure(-9), 1: _failure(-15)}, 0),  # rank 1 was stopped by the agent
        ({0: _failure(3), 1: _failure(-9, late=True)}, 0),  # rank 1 was silent: killed after the grace
        ({0: _failure(2), 1: _failure(143)}, 0),  # a user error; rank 1 exited on the agent's SIGTERM
        ({0: _failure(3), 1: _failure(1)}, 1),  # a crash beats a lost peer
    ],
    ids=["killed", "stopped-by-agent", "silent", "user-error", "crash"],
)
def test_the_agent_blames_the_rank_that_caused_the_failure(failures: dict[int, Any], cause: int) -> None:
    assert blamed(failures)[0] == cause


def test_when_to_checkpoint_is_not_part_of_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """train.checkpoint_minutes and checkpoint_every cannot change the numbers (resume is exact from any
    iteration), so a checkpoint made under other values still resumes; any other param starts afresh."""
    monkeypatch.chdir(make_project(tmp_path))
    cpu = torch.device("cpu")
    base = run_fingerprint(small_cfg(), TrainPaths(), cpu)
    assert run_fingerprint(small_cfg(checkpoint_minutes=30, checkpoint_every=5), TrainPaths(), cpu) == base
    assert run_fingerprint(small_cfg(log_every=7), TrainPaths(), cpu) != base
