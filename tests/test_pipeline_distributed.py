"""The train stage as 2 processes under the real DVC CLI, and a sweep shared between two clones.

A minimal DVC project (this tree's code, the real `train` stage of dvc.yaml, synthetic prepared data) with a
local bare git remote and a local DVC remote stands for two machines: each clone runs its own experiment
(`WGAN_NPROC=2 dvc exp run` in one, one process in the other) and pushes it (`dvc exp push`); the other
clone pulls it (`dvc exp pull`), compares both in one `dvc exp show`, and gets the models from the DVC remote.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import BIN, REPO, dvc, ran_stages, run_cmd, stage_env
from helpers import make_project

from wgan import paths

pytestmark = [pytest.mark.slow, pytest.mark.long]  # DVC experiments under torchrun, two clones: ~50 s

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]


def _git(repo: Path, *args: str) -> str:
    return subprocess.run([*GIT, *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def _train_only_project(root: Path, origin: Path, store: Path) -> Path:
    """A git + DVC repo holding the code, the real train stage, small params and DVC-tracked synthetic data."""
    make_project(root, max_iterations=20, log_every=10, sample_interval=10, lr=5e-5)
    for folder in ("src", "stages"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    train = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["train"]
    # without the params stage's marker: this project's params.yaml holds only the sections train reads
    train["deps"] = [dep for dep in train["deps"] if dep != paths.PARAMS_OK.as_posix()]
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"train": train}}, sort_keys=False))
    _git(root, "init", "-q", "-b", "main")
    dvc(root, "init", "-q")
    dvc(root, "remote", "add", "-d", "store", str(store))
    dvc(root, "add", "-q", "data/prepared")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "baseline")
    _git(root, "remote", "add", "origin", str(origin))
    _git(root, "push", "-q", "origin", "main")
    dvc(root, "push", "-q")
    return root


def _exp_run(repo: Path, *args: str, nproc: str | None = None) -> str:
    env = {**stage_env(repo), "WGAN_DEVICE": "cpu"}
    if nproc:
        env["WGAN_NPROC"] = nproc
    return run_cmd(repo, str(BIN / "dvc"), "exp", "run", *args, env=env).stdout


def _exp_names(repo: Path) -> dict[str, float]:
    """{experiment name: its train.lr} from `dvc exp show --json`."""
    shown = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    names = {}
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            for rev in exp["revs"]:
                params = rev["data"]["params"]["params.yaml"]["data"]
                names[exp["name"]] = params["train"]["lr"]
    return names


def test_two_process_exp_run_and_sharing_experiments_between_clones(tmp_path: Path) -> None:
    origin, store = tmp_path / "origin.git", tmp_path / "dvc-store"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
    first = _train_only_project(tmp_path / "first", origin, store)
    second = tmp_path / "second"
    subprocess.run(["git", "clone", "-q", str(origin), str(second)], check=True)
    dvc(second, "pull", "-q", "data/prepared")

    out = _exp_run(first, "-n", "two-procs", "-S", "train.lr=1e-4", nproc="2")
    assert ran_stages(out) == {"train"} and "torchrun --nproc-per-node=2 --standalone" in out
    out = _exp_run(second, "-n", "one-proc", "-S", "train.lr=2e-4")
    assert ran_stages(out) == {"train"}

    # each "machine" shares its experiment through the git remote (refs) and the DVC remote (models)
    dvc(first, "exp", "push", "origin", "two-procs")
    dvc(second, "exp", "push", "origin", "--rev", "HEAD")  # every experiment of this baseline (docs/distributed.md)
    dvc(first, "exp", "pull", "origin", "--rev", "HEAD")
    dvc(second, "exp", "pull", "origin", "two-procs")
    for repo in (first, second):
        assert _exp_names(repo) == {"two-procs": 1e-4, "one-proc": 2e-4}

    # the second clone gets the first's models without training
    dvc(second, "exp", "apply", "two-procs")
    dvc(second, "pull", "-q")
    assert (second / "models/generator.pt").read_bytes() == _git_blob(first, "two-procs", "models/generator.pt")


def _git_blob(repo: Path, exp: str, path: str) -> bytes:
    """The bytes of DVC output ``path`` as experiment ``exp`` recorded it, from ``repo``'s DVC cache."""
    lock = yaml.safe_load(_git(repo, "show", f"{_exp_ref(repo, exp)}:dvc.lock"))
    md5 = next(o["md5"] for o in lock["stages"]["train"]["outs"] if o["path"] == path)
    return (repo / ".dvc/cache/files/md5" / md5[:2] / md5[2:]).read_bytes()


def _exp_ref(repo: Path, exp: str) -> str:
    refs = _git(repo, "for-each-ref", "--format=%(refname)", "refs/exps").split()
    return next(ref for ref in refs if ref.endswith(f"/{exp}"))
