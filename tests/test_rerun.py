"""Rerun only what changed, in every workspace (#35): a clone pulled from a remote, queued experiments, and the
workspace after an interrupted or failed run and the recovery its messages recommend; deps as wide as the outputs.

The real DVC CLI in one temporary git repo for the module, on small models and synthetic data: the download and
prepare stages are recorded (`dvc commit`) over stand-in raw files and synthetic prepared splits, so nothing is
fetched. The tests run in file order; each leaves the workspace as the committed run, up to date.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import BIN, dvc, edit_params, make_repo, ran_stages, run_cmd, run_stage_script, stage_env
from helpers import SMALL, assert_same_state, load_state, write_split

from wgan import paths

pytestmark = [pytest.mark.slow, pytest.mark.long]  # a pipeline of its own, clones, a killed run: ~130 s

N_TRAIN, N_TEST, BATCH = 400, 200, 50
PER_EPOCH = N_TRAIN // BATCH
QUICK = {  # 8 iterations an epoch, two epochs, a generator kept at each
    "train": {**SMALL, "batch_size": BATCH, "epochs": 2, "keep_every": 1, "sample_interval": 8, "log_every": 4},
    "render": {"n_images": 4, "nrow": 2},  # <= SMALL's n_fixed
    "gif": {"stride": 1},
    "latent_walk": {"n": 4, "steps": 8},
    "classifier": {"epochs": 1},
    "judge": {"epochs": 1},
    "quality": {"n_samples": 100, "batch_size": 100, "kid_subsets": 2, "kid_subset_size": 50},
    "evaluate": {"n_samples": 100, "batch_size": 100, "kid_subsets": 2, "kid_subset_size": 50},
}
RESET = "git show HEAD:params.yaml > params.yaml && git show HEAD:dvc.lock > dvc.lock"  # back to the commit
OUTPUT_FOLDERS = ("models", "dvclive", "results")
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]


def one_thread(repo: Path) -> dict[str, str]:
    """The stage environment on one thread: a run and its reference then round alike, bit for bit."""
    return stage_env(repo) | {"OMP_NUM_THREADS": "1"}


def commit(repo: Path, message: str) -> None:
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run([*GIT, "commit", "-qm", message], cwd=repo, check=True)


def snapshot(repo: Path) -> dict[str, bytes]:
    """Every file under the DVC output folders, with its bytes (hidden temp files of killed writes left out)."""
    found = [p for top in OUTPUT_FOLDERS for p in sorted((repo / top).rglob("*")) if p.is_file()]
    return {str(p.relative_to(repo)): p.read_bytes() for p in found if not p.name.startswith(".")}


def status(repo: Path) -> dict:
    return json.loads(dvc(repo, "status", "--json").stdout)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The quick pipeline, run once and committed, with a local remote holding every output."""
    root = make_repo(tmp_path_factory.mktemp("rerun") / "repo", QUICK)
    write_split(root / "data/prepared/train.pt", N_TRAIN, seed=0)
    write_split(root / "data/prepared/test.pt", N_TEST, seed=1)
    (root / "data/raw").mkdir(parents=True)
    (root / "data/raw/stand-in").write_text("download and prepare are recorded, not run\n")
    dvc(root, "repro", "params")
    dvc(root, "commit", "--force", "download", "prepare")
    done = run_cmd(root, str(BIN / "dvc"), "repro", env=one_thread(root))
    assert ran_stages(done.stdout) >= {"train", "classifier", "judge", "quality", "evaluate"}, done.stdout
    dvc(root, "remote", "add", "-d", "local", str(root.parent / "remote"))
    commit(root, "the quick pipeline, run")
    dvc(root, "push")
    return root


@pytest.fixture(scope="module")
def finished(repo: Path) -> dict[str, bytes]:
    assert status(repo) == {}
    return snapshot(repo)


def test_the_resume_state_is_no_pipeline_output(repo: Path, finished: dict[str, bytes]) -> None:
    """The checkpoint lives outside every DVC output; a workspace without it is up to date."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    outs = {out["path"] for stage in lock["stages"].values() for out in stage.get("outs", [])}
    assert not [out for out in outs if "checkpoint" in out], outs
    assert (repo / paths.CHECKPOINT).is_file()  # the finished run's, where no DVC command looks
    tracked = subprocess.run(["git", "ls-files"], cwd=repo, capture_output=True, text=True, check=True).stdout.split()
    assert not [f for f in tracked if f.endswith("checkpoint.pt")]
    assert [f for f in tracked if f.startswith("models/")] == ["models/.gitignore"]  # outputs go to DVC's cache
    state = repo / paths.CHECKPOINT.parent
    shutil.rmtree(state)
    assert status(repo) == {}
    assert ran_stages(dvc(repo, "repro").stdout) == set()


@pytest.fixture(scope="module")
def clone(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A teammate's workspace: `git clone` of the committed run, then `dvc pull` from the remote."""
    path = tmp_path_factory.mktemp("clone") / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(path)], check=True)
    dvc(path, "pull")
    return path


def test_a_clone_pulled_from_the_remote_is_up_to_date(clone: Path, finished: dict[str, bytes]) -> None:
    assert not (clone / paths.CHECKPOINT).exists()
    assert status(clone) == {}
    assert ran_stages(dvc(clone, "repro").stdout) == set()
    assert snapshot(clone) == finished


def _queue_done(repo: Path, names: list[str], timeout_s: float = 420) -> str:
    """Wait for the queued experiments ``names`` to end; `dvc queue status` at the end."""
    deadline = time.monotonic() + timeout_s
    while True:
        shown = dvc(repo, "queue", "status").stdout
        rows = {line.split()[1]: line for line in shown.splitlines()[1:] if len(line.split()) > 2}
        if all(name in rows and ("Success" in rows[name] or "Failed" in rows[name]) for name in names):
            return shown
        assert time.monotonic() < deadline, shown
        time.sleep(2)


@pytest.mark.long  # DVC's queue starts its workers (celery) and a temporary workspace per experiment: over a minute
def test_queued_experiments_run_only_what_their_change_reruns(clone: Path, finished: dict[str, bytes]) -> None:
    """In the pulled clone, two experiments in two workers at once (`dvc queue start -j 2`), each in a fresh
    temporary workspace: both finish, and each runs params, pick_generator, evaluate and export only: train,
    classifier and quality are skipped."""
    repo = clone
    names = ["samples-120", "samples-150"]
    for name, n in zip(names, (120, 150), strict=True):
        dvc(repo, "exp", "run", "--queue", "-n", name, "-S", f"evaluate.n_samples={n}")
    dvc(repo, "queue", "start", "-j", "2")
    shown = _queue_done(repo, names)
    for name in names:
        assert "Success" in next(line for line in shown.splitlines() if name in line), shown
        log = dvc(repo, "queue", "logs", name).stdout
        assert ran_stages(log) == {"params", "pick_generator", "evaluate", "export"}, log
    exps = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    runs = {e["name"]: e["revs"][0]["data"] for commit in exps for e in (commit.get("experiments") or [])}
    for name, n in zip(names, (120, 150), strict=True):
        assert runs[name]["params"]["params.yaml"]["data"]["evaluate"]["n_samples"] == n
        assert "fid" in runs[name]["metrics"]["results/eval/metrics.json"]["data"]
    assert status(repo) == {} and snapshot(repo) == finished  # the workspace is untouched


def _epochs_done(path: Path, seed: int) -> int:
    """The epochs done in the checkpoint at ``path`` by an unfinished run of train.seed ``seed`` (else -1)."""
    try:
        ckpt = torch.load(path, weights_only=True)
    except (OSError, RuntimeError, EOFError):  # not there yet, or replaced while reading
        return -1
    config = ckpt["fingerprint"]["config"]
    if config["seed"] != seed:
        return -1
    assert ckpt["iteration"] < config["epochs"] * PER_EPOCH, "the run ended before it could be killed: make it longer"
    return int(ckpt["epochs_done"])


def _kill_when_kept(repo: Path, seed: int, kept: int) -> None:
    """`dvc repro` in its own process group, SIGKILLed with its stage once the checkpoint of the run of train.seed
    ``seed`` holds ``kept`` epochs (the finished run's checkpoint is there until the new run's first)."""
    proc = subprocess.Popen(
        [str(BIN / "dvc"), "repro"], cwd=repo, env=one_thread(repo), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while _epochs_done(repo / paths.CHECKPOINT, seed) < kept:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)


def test_killed_run_then_the_recommended_checkout_then_repro_resumes(
    repo: Path, finished: dict[str, bytes], tmp_path: Path
) -> None:
    """The issue's scenario: a finished run, then one with another seed SIGKILLed after 3 kept generators. The
    recovery dvc.yaml recommends (`dvc checkout`) brings back the finished run; `dvc repro` then resumes the killed
    run, says so in one line, and ends with the weights and kept generators of an uninterrupted run."""
    edit_params(repo, train={"seed": 1, "epochs": 40})
    _kill_when_kept(repo, seed=1, kept=3)

    dvc(repo, "checkout")  # no --force: the killed run left no unsaved output behind
    assert snapshot(repo) == finished
    resumed = run_cmd(repo, str(BIN / "dvc"), "repro", env=one_thread(repo))
    out = resumed.stdout + resumed.stderr
    assert "error" not in out.lower(), out
    assert len(re.findall(r"^resuming from .*: (\d+) epochs", out, re.M)) == 1, out
    assert int(re.search(r"^resuming from .*: (\d+) epochs", out, re.M)[1]) >= 3, out

    reference = tmp_path / "reference"  # the same params and data, uninterrupted
    shutil.copytree(repo / "data/prepared", reference / "data/prepared")
    shutil.copy(repo / "params.yaml", reference)
    ref = run_stage_script("train", reference)
    assert ref.returncode == 0, ref.stderr
    for name in ("generator.pt", "critic.pt"):
        assert_same_state(load_state(reference / "models" / name), load_state(repo / "models" / name))
    kept = sorted(p.name for p in (repo / paths.KEPT).iterdir())
    assert kept == sorted(p.name for p in (reference / paths.KEPT).iterdir())
    for name in kept:
        assert_same_state(load_state(reference / paths.KEPT / name), load_state(repo / paths.KEPT / name))

    subprocess.run(RESET, shell=True, cwd=repo, check=True)
    dvc(repo, "checkout")
    assert status(repo) == {} and snapshot(repo) == finished


def test_a_failed_train_is_restored_by_the_checkout_its_message_names(repo: Path, finished: dict[str, bytes]) -> None:
    """A run that trained a few iterations, then failed (a NaN under DVC): its one line names `dvc checkout train`,
    which brings back the finished run without a prompt or --force."""
    edit_params(repo, train={"loss": "wgan-gp", "optimizer": "adam", "gp_lambda": 1e39})  # inf in float32: NaN
    failed = dvc(repo, "repro", "train", check=False)
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error: ")]
    assert failed.returncode != 0 and len(errors) == 1, failed.stderr
    assert errors[0].startswith("error: training diverged"), errors
    assert errors[0].endswith("`dvc checkout train` restores its last outputs"), errors
    subprocess.run(RESET, shell=True, cwd=repo, check=True)
    dvc(repo, "checkout", "train")
    assert status(repo) == {} and snapshot(repo) == finished


def _another_best(repo: Path) -> None:
    """As if the quality stage had picked another kept generator: other bytes in models/best_generator.pt."""
    with open(repo / paths.BEST_GENERATOR, "ab") as best:
        best.write(b"another pick")


def test_a_quality_change_reruns_evaluate_only_when_it_scores_the_best_generator(
    repo: Path, finished: dict[str, bytes]
) -> None:
    """evaluate.generator: final: evaluate (and export) depend on no output of quality, so neither a quality param
    nor another best generator reruns them; best: another best generator reruns them (through the pick)."""
    best = (repo / paths.BEST_GENERATOR).read_bytes()
    edit_params(repo, quality={"seed": 1})
    ran = ran_stages(dvc(repo, "repro").stdout)
    changed = (repo / paths.BEST_GENERATOR).read_bytes() != best  # the best epoch rarely moves with the seed
    assert ran == {"params", "quality"} | ({"pick_generator"} if changed else set()), ran
    _another_best(repo)
    assert set(status(repo)) == {"quality", "pick_generator"}  # evaluate's deps are unchanged

    subprocess.run(RESET, shell=True, cwd=repo, check=True)
    dvc(repo, "checkout", "--force")  # the hand-made best generator is in no cache
    edit_params(repo, evaluate={"generator": "best"})
    out = dvc(repo, "repro").stdout
    assert ran_stages(out) == {"params", "pick_generator", "evaluate", "export"}, out
    assert "samples of models/best_generator.pt" in out, out
    _another_best(repo)
    dvc(repo, "repro", "--single-item", "pick_generator")  # quality itself would write its pick back
    assert set(status(repo)) == {"quality", "evaluate", "export"}  # the generator they read changed

    subprocess.run(RESET, shell=True, cwd=repo, check=True)
    dvc(repo, "checkout", "--force")
    assert status(repo) == {} and snapshot(repo) == finished


def _edit(repo: Path, rel: str) -> str:
    path = repo / rel
    text = path.read_text()
    path.write_text(text + "# a contributor's edit\n")
    return text


@pytest.mark.parametrize(
    ("module", "stages"),
    [
        ("src/wgan/quality/quality.py", {"quality"}),
        ("src/wgan/classifier/classifier.py", {"classifier", "judge", "quality", "evaluate"}),  # the shared loop
        ("src/wgan/judge/judge.py", {"judge", "evaluate"}),
        ("src/wgan/evaluation/evaluate.py", {"quality", "evaluate"}),
    ],
    ids=["quality", "classifier", "evaluate", "judge"],
)
def test_a_module_edit_changes_the_stages_whose_outputs_it_decides(
    repo: Path, finished: dict[str, bytes], module: str, stages: set[str]
) -> None:
    text = _edit(repo, module)
    try:
        assert set(status(repo)) == stages
    finally:
        (repo / module).write_text(text)
    assert status(repo) == {}
