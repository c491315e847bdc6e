"""One home for every path and for the code that decides a run's numbers, checked against dvc.yaml."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from wgan import paths
from wgan.checkpoint import TRAINING_CODE, training_code

REPO = Path(__file__).resolve().parents[1]


def _entries(items: list[str | dict]) -> set[str]:
    """The paths of a dvc.yaml list whose entries are plain strings or one-key mappings with options."""
    return {item if isinstance(item, str) else next(iter(item)) for item in items}


def test_stage_paths_are_exactly_the_data_deps_and_outputs_in_dvc_yaml() -> None:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert set(stages) == set(paths.STAGES)
    for name, stage in stages.items():
        reads, writes = paths.STAGES[name]
        data_deps = {d for d in _entries(stage.get("deps", [])) if not d.endswith(".py")}
        outputs = set().union(*(_entries(stage.get(kind, [])) for kind in ("outs", "metrics", "plots")))
        assert data_deps == {p.as_posix() for p in reads}, name
        assert outputs == {p.as_posix() for p in writes}, name


def test_train_code_deps_are_exactly_the_fingerprinted_code() -> None:
    deps = _entries(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["train"]["deps"])
    code = {path.resolve().relative_to(REPO).as_posix() for path in training_code()}
    assert {d for d in deps if d.endswith(".py")} == code | {"stages/train.py"}
    assert all(path.is_file() for path in training_code())


FINGERPRINT = """
import sys, torch
from wgan.checkpoint import run_fingerprint
from wgan.config import parse_section
from wgan.paths import TrainPaths
print(run_fingerprint(parse_section("train", {}), TrainPaths(), torch.device("cpu"))["code"])
"""


def test_rewording_the_monitor_keeps_checkpoints_but_a_math_change_does_not(tmp_path: Path) -> None:
    """A copy of the library, edited as a contributor would; the fingerprint is computed by that copy."""
    src = tmp_path / "src"
    shutil.copytree(REPO / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("train.pt", "test.pt"):
        (tmp_path / "data/prepared").mkdir(parents=True, exist_ok=True)
        (tmp_path / "data/prepared" / name).write_bytes(b"stand-in data")

    def code_hash() -> str:
        env = {"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"}
        done = subprocess.run(
            [sys.executable, "-c", FINGERPRINT], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    before = code_hash()
    monitor = src / "wgan/monitor.py"
    monitor.write_text(monitor.read_text().replace('unit="it"', 'unit=" iterations"'))
    assert code_hash() == before  # the progress bar reworded: a saved checkpoint stays resumable
    assert "monitor.py" not in TRAINING_CODE and "checkpoint.py" not in TRAINING_CODE
    step = src / "wgan/step.py"
    step.write_text(step.read_text().replace("self.generator_count += 1", "self.generator_count += 1  # edited", 1))
    assert code_hash() != before  # the training step changed: old checkpoints are refused
