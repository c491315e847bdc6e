"""The DVC graph follows the code: every module a stage imports is covered by that stage's deps in dvc.yaml.

A stage's code deps are folders of the library (``src/wgan/training``, ...). The closure check below reads each
stage script's imports with ``ast``, follows them through the library, and fails naming the stage and the module
when a module that can decide an output is not covered. The train stage's checkpoint fingerprint hashes exactly
those deps (``wgan.paths.stage_code``), so the list exists once.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, dvc, make_repo, stand_in_files

from wgan import paths

SRC = REPO / "src"

# Modules no stage's deps need to cover: none can change an output byte. One place, with the reason for each.
OUTSIDE_DEPS = {
    "wgan/__init__.py": "empty: the package marker",
    "wgan/download/__init__.py": "empty: the package marker (prepare imports download/canonical.py through it)",
    "wgan/errors.py": "the user error and its one-line form: what a failure says, never what a run writes",
    "wgan/stage.py": "the stage wrapper: exit codes and signal handling, around the stage's work",
    "wgan/paths.py": "where files live; a moved output is a dvc.yaml change, which DVC sees",
    "wgan/fileio.py": "atomic writes and safe loads: it writes the bytes it is given, or nothing",
    "wgan/device.py": "picks cuda/mps/cpu: the device is deliberately not tracked (the same run on any device)",
    "wgan/launch.py": "starts torchrun's processes: their number is deliberately not tracked",
    "wgan/progress.py": "the progress bar, model summary and messages: the terminal only",
    "wgan/config/": "reads and validates params.yaml: DVC tracks the values themselves, section by section, and the "
    "params stage refuses a tracked section that leaves a key to a default in the code",
}


def _module_file(name: str) -> Path | None:
    """The file of module ``wgan....`` under src/, or None when ``name`` is not a module of the library."""
    base = SRC.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> set[Path]:
    """The library modules ``path`` imports anywhere (top level or inside a function), and their packages."""
    found: set[Path] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name.split(".")[0] != "wgan":
                continue
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing wgan.a.b runs wgan/__init__ and wgan/a/__init__ too
                module = _module_file(".".join(parts[:i]))
                if module is not None:
                    found.add(module)
    return found


def import_closure(script: Path) -> set[Path]:
    """Every library module that running ``script`` can import, transitively."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        for module in _imports(todo.pop()) - seen:
            seen.add(module)
            todo.append(module)
    return seen


def _stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", list(_stages()))
def test_every_module_a_stage_imports_is_covered_by_its_deps(stage: str) -> None:
    script = REPO / "stages" / f"{stage}.py"
    covered = set(paths.stage_code(stage, REPO))
    assert script in covered, f"{stage}: stages/{stage}.py is not among its deps in dvc.yaml"
    for module in sorted(import_closure(script)):
        rel = module.relative_to(SRC).as_posix()
        outside = any(rel == name or (name.endswith("/") and rel.startswith(name)) for name in OUTSIDE_DEPS)
        assert module in covered or outside, (
            f"stage {stage} imports src/{rel}, which is neither among its deps in dvc.yaml nor in OUTSIDE_DEPS"
        )


def test_the_closure_check_sees_lazy_imports_and_packages() -> None:
    """The check itself: a function-level import and the packages on the way are part of the closure."""
    closure = {m.relative_to(SRC).as_posix() for m in import_closure(SRC / "wgan/commands/main.py")}
    assert {"wgan/images/generate.py", "wgan/images/__init__.py", "wgan/commands/compare.py"} <= closure


def test_outside_modules_exist() -> None:
    assert all((SRC / rel).exists() for rel in OUTSIDE_DEPS)


def test_dvcignore_keeps_bytecode_out_of_the_deps() -> None:
    assert "__pycache__/" in (REPO / ".dvcignore").read_text().split()


# The copy's own code computes its fingerprint, once per line read: it hashes the files as they are on disk at
# that moment, so one process (one torch import) serves every edit below.
FINGERPRINT = """
import sys
import torch
from wgan.config import parse_section
from wgan.paths import TrainPaths
from wgan.training.checkpoint import run_fingerprint
for _ in sys.stdin:
    print(run_fingerprint(parse_section("train", {}), TrainPaths(), torch.device("cpu"))["code"], flush=True)
"""


@pytest.mark.slow
def test_the_checkpoint_fingerprint_hashes_exactly_the_train_stage_deps(tmp_path: Path) -> None:
    """A copy of the project, edited as a contributor would; the fingerprint is computed by that copy."""
    shutil.copytree(REPO / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(REPO / "stages", tmp_path / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", tmp_path)
    (tmp_path / "data/prepared").mkdir(parents=True)
    for name in ("train.pt", "test.pt"):
        (tmp_path / "data/prepared" / name).write_bytes(b"stand-in data")

    env = {"PYTHONPATH": str(tmp_path / "src"), "PATH": "/usr/bin:/bin"}

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", FINGERPRINT], cwd=tmp_path, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip

    hasher = start()

    def code_hash() -> str:
        assert hasher.stdin is not None and hasher.stdout is not None
        hasher.stdin.write("\n")
        hasher.stdin.flush()
        line = hasher.stdout.readline().strip()
        assert line, "the fingerprint process died"
        return line

    def edit(rel: str, old: str, new: str) -> None:
        path = tmp_path / rel
        text = path.read_text()
        assert old in text, (rel, old)
        path.write_text(text.replace(old, new, 1))

    before = code_hash()
    edit("src/wgan/progress.py", 'unit="it"', 'unit=" iterations"')
    assert code_hash() == before  # the progress bar reworded: a saved checkpoint stays resumable
    edit("src/wgan/evaluation/metrics.py", "import math", "import math  # edited")
    assert code_hash() == before  # not the train stage's code
    for rel, old in [
        ("src/wgan/training/step.py", "self.generator_count += 1"),
        ("src/wgan/models/networks.py", "nn.Tanh()]"),
        ("src/wgan/data/prepared.py", "IMAGE_SHAPE = (1, 28, 28)"),
        ("stages/train.py", "import sys"),
    ]:
        edit(rel, old, old + "  # edited")
        after = code_hash()
        assert after != before, f"editing {rel} kept old checkpoints resumable"
        before = after
    hasher.communicate(timeout=60)
    new_module = tmp_path / "src/wgan/training/new_helper.py"
    new_module.write_text("X = 1\n")
    hasher = start()  # a run lists its dep folders once: a new process sees the new file
    assert code_hash() != before  # a new file in a dep folder is a code change too
    hasher.communicate(timeout=60)


@pytest.mark.slow
def test_editing_the_idx_reader_changes_prepare_and_what_follows_only(tmp_path: Path) -> None:
    """The real DVC CLI: with every stage's lock recorded, an edit to the function that turns data/raw into arrays
    leaves params and download unchanged and shows prepare changed, with only stages downstream of it; an edit to
    a download source shows download alone."""
    repo = make_repo(tmp_path)
    stand_in_files(repo)
    dvc(repo, "commit", "--force")
    assert "up to date" in dvc(repo, "status").stdout.lower()

    reader = repo / "src/wgan/data/idx.py"
    text = reader.read_text()
    old = "def decode_idx(data: bytes, name: str, ndim: int) -> np.ndarray:\n"
    assert old in text
    reader.write_text(text.replace(old, old + "    # a contributor's edit\n", 1))
    changed = set(yaml.safe_load(dvc(repo, "status", "--json").stdout))
    downstream = _downstream_of("prepare", repo)
    assert "prepare" in changed
    assert changed <= downstream | {"prepare"}, f"stages not downstream of prepare changed: {changed - downstream}"
    assert not {"params", "download"} & changed

    reader.write_text(text)  # back, then edit a source of the download: prepare's own deps are unchanged
    source = repo / "src/wgan/download/pypi.py"
    source.write_text(source.read_text() + "# a contributor's edit\n")
    assert set(yaml.safe_load(dvc(repo, "status", "--json").stdout)) == {"download"}


def _downstream_of(stage: str, repo: Path) -> set[str]:
    """The stages that read, directly or not, an output of ``stage``: reachable from it in `dvc dag`'s graph."""
    edges = re.findall(r'"([^"]+)" -> "([^"]+)"', dvc(repo, "dag", "--dot").stdout)
    found: set[str] = set()
    todo = [stage]
    while todo:
        source = todo.pop()
        for a, b in edges:
            if a == source and b not in found:
                found.add(b)
                todo.append(b)
    return found
