"""The export stage as users run it: its script, `wgan sample` on its folder, DVC's reruns, and the model registry
(GTO tags, `dvc artifacts get` through Git and a local DVC remote, no Studio)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import (
    BIN,
    REPO,
    dvc,
    edit_params,
    make_repo,
    ran_stages,
    run_cmd,
    run_stage_script,
    stage_env,
    stand_in_files,
    wgan_command,
)
from dvc.api import artifacts_show
from exports import random_generator, write_inputs

from wgan import paths
from wgan.data.model_file import save_model
from wgan.export.folder import FILES

pytestmark = pytest.mark.slow


def _folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _sample(cwd: Path, model: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """`wgan sample` of this checkout's code, run in ``cwd``."""
    command = [*wgan_command(), "sample", "--model", str(model), "--n", "20", "--out", str(out)]
    return run_cmd(cwd, *command, check=False, env=stage_env(REPO))


@pytest.mark.long  # two export processes and two wgan runs
def test_two_processes_write_the_same_bytes_and_wgan_sample_reads_the_folder(tmp_path: Path) -> None:
    """The same inputs in two workspaces: identical folders. `wgan sample --model <folder>` draws the same PNG
    as `--model models/evaluated_generator.pt`, whose file records the normalization 0.45 / 0.6: the folder
    carries it."""
    folders = []
    for name in ("a", "b"):
        ws = write_inputs(tmp_path / name, conditional=True, norm=(0.45, 0.6))
        done = run_stage_script("export", ws)
        assert done.returncode == 0, done.stderr
        folders.append(ws / paths.EXPORT)
    assert _folder_bytes(folders[0]) == _folder_bytes(folders[1])
    assert set(_folder_bytes(folders[0])) == set(FILES)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    from_folder = _sample(elsewhere, folders[0], elsewhere / "folder.png")
    from_file = _sample(tmp_path / "a", paths.EVALUATED_GENERATOR, elsewhere / "file.png")
    assert from_folder.returncode == 0 and from_file.returncode == 0, from_folder.stderr + from_file.stderr
    assert (elsewhere / "folder.png").read_bytes() == (elsewhere / "file.png").read_bytes()


def test_wgan_sample_on_a_folder_whose_config_does_not_match_is_one_line(tmp_path: Path) -> None:
    ws = write_inputs(tmp_path, conditional=False)
    assert run_stage_script("export", ws).returncode == 0
    config = ws / paths.EXPORT / "config.json"
    config.write_text(json.dumps(json.loads(config.read_text()) | {"hidden": [16, 16, 16]}))
    done = _sample(ws, paths.EXPORT, ws / "d.png")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "models/export/model.safetensors does not match models/export/config.json" in done.stderr
    assert not (ws / "d.png").exists()


def _immutable(folder: Path, on: bool) -> bool:
    """Make ``folder`` unwritable even for root (``chattr +i``); False where the file system or the container
    does not allow it. Without root, permission bits do the same."""
    if os.geteuid() != 0:
        folder.chmod(0o555 if on else 0o755)
        return True
    return subprocess.run(["chattr", "+i" if on else "-i", str(folder)], capture_output=True).returncode == 0


def test_an_unwritable_models_folder_is_one_line_and_keeps_the_last_export(tmp_path: Path) -> None:
    ws = write_inputs(tmp_path, conditional=False)
    assert run_stage_script("export", ws).returncode == 0
    before = _folder_bytes(ws / paths.EXPORT)
    save_model(random_generator(False, seed=5), ws / paths.EVALUATED_GENERATOR, (0.5, 0.5))  # a new one to export
    if not _immutable(ws / "models", True):
        pytest.skip("cannot make a folder unwritable here: chattr +i needs root on a file system that has it")
    try:
        done = run_stage_script("export", ws)
    finally:
        _immutable(ws / "models", False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: cannot write models/export:") and "make its folder writable" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert _folder_bytes(ws / paths.EXPORT) == before
    assert sorted(p.name for p in (ws / "models").iterdir()) == ["evaluated_generator.pt", "export"]


def _changed(repo: Path) -> bool:
    return bool(yaml.safe_load(dvc(repo, "status", "export", "--json").stdout))


@pytest.mark.long  # sixteen `dvc status` runs
def test_the_export_stage_reruns_when_and_only_when_the_generator_its_sections_or_its_code_change(
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path)
    stand_in_files(repo)
    write_inputs(tmp_path / "inputs", conditional=True)
    shutil.copy(tmp_path / "inputs" / paths.EVALUATED_GENERATOR, repo / paths.EVALUATED_GENERATOR)
    shutil.copy(tmp_path / "inputs/results/eval/metrics.json", repo / paths.EVAL_METRICS)
    dvc(repo, "commit", "--force")
    done = dvc(repo, "repro", "--force", "--single-item", "export")
    assert ran_stages(done.stdout) == {"export"}
    assert (repo / paths.EXPORT / "model.safetensors").is_file()
    assert not _changed(repo)

    def edit(rel: str, change: bool, text: str = "\n# a contributor's edit\n") -> None:
        path = repo / rel
        original = path.read_bytes()
        path.write_bytes(original + text.encode())
        assert _changed(repo) == change, f"editing {rel}: export should {'' if change else 'not '}change"
        path.write_bytes(original)

    def param(section: str, key: str, value: object, change: bool) -> None:
        original = (repo / "params.yaml").read_text()
        edit_params(repo, **{section: {key: value}})
        assert _changed(repo) == change, f"{section}.{key}: export should {'' if change else 'not '}change"
        (repo / "params.yaml").write_text(original)

    param("train", "lr", 1e-4, True)
    param("evaluate", "seed", 3, True)
    param("prepare", "std", 0.25, False)  # the generator's file records its normalization
    param("render", "nrow", 4, False)
    param("quality", "seed", 3, False)
    edit("src/wgan/export/card.py", True)
    edit("src/wgan/export/index.html", True, "<!-- an edit -->\n")
    edit("stages/export.py", True)
    edit("src/wgan/evaluation/metrics.py", False)
    edit("src/wgan/training/step.py", False)
    edit("stages/evaluate.py", False)
    assert not _changed(repo)

    for unread in (paths.GENERATOR, paths.BEST_GENERATOR):  # the pick_generator stage copies one of them
        save_model(random_generator(True, seed=7), repo / unread, (0.5, 0.5))
        assert not _changed(repo), f"export depends on {unread}: it reads the evaluated copy alone"
    weights = (repo / paths.EXPORT / "model.safetensors").read_bytes()
    save_model(random_generator(True, seed=7), repo / paths.EVALUATED_GENERATOR, (0.5, 0.5))
    assert _changed(repo)
    assert ran_stages(dvc(repo, "repro", "--single-item", "export").stdout) == {"export"}
    assert (repo / paths.EXPORT / "model.safetensors").read_bytes() != weights
    assert not _changed(repo)


def _tagger_env(repo: Path) -> dict[str, str]:
    names = {f"GIT_{who}_{what}": value for who in ("AUTHOR", "COMMITTER") for what, value in
             (("NAME", "test"), ("EMAIL", "test@example.com"))}  # fmt: skip
    return stage_env(repo) | names | {"DVC_NO_ANALYTICS": "1"}


@pytest.mark.long  # two versions through GTO, a remote and `dvc artifacts get`
def test_the_registry_flow_gets_the_exact_bytes_of_a_version_and_a_stage(tmp_path: Path) -> None:
    """GTO tags a version and a stage; `dvc artifacts get` elsewhere brings back that version's bytes through Git
    and the DVC remote (the source repository's cache deleted first), while a newer version exists."""
    repo = make_repo(tmp_path / "repo")
    env = _tagger_env(repo)
    reads, writes = paths.STAGES["train"]
    for rel in (*reads, *writes):
        target = repo / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.suffix:
            target.mkdir(exist_ok=True)
            target = target / "stand-in"
        target.write_text("stand-in\n")
    dvc(repo, "remote", "add", "-d", "store", str(tmp_path / "remote"))
    versions = {}
    for version, seed in (("v1.0.0", 0), ("v1.1.0", 1)):
        save_model(random_generator(False, seed=seed), repo / paths.GENERATOR)
        versions[version] = (repo / paths.GENERATOR).read_bytes()
        dvc(repo, "commit", "--force", "train")
        dvc(repo, "push", "train")
        run_cmd(repo, "git", "add", "-A", env=env)
        run_cmd(repo, "git", "commit", "-qm", f"generator {version}", env=env)
        run_cmd(repo, str(BIN / "gto"), "register", "generator", "--version", version, env=env)
        if version == "v1.0.0":
            run_cmd(repo, str(BIN / "gto"), "assign", "generator", "--version", version, "--stage", "prod", env=env)
    shutil.rmtree(repo / ".dvc/cache")  # only Git and the remote are left to serve the bytes

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for selector, want in (
        (["--rev", "v1.0.0"], "v1.0.0"),
        (["--stage", "prod"], "v1.0.0"),
        (["--rev", "v1.1.0"], "v1.1.0"),
    ):
        out = elsewhere / f"{'-'.join(selector)}.pt"
        run_cmd(
            elsewhere, str(BIN / "dvc"), "artifacts", "get", str(repo), "generator", *selector, "-o", str(out), env=env
        )
        assert out.read_bytes() == versions[want], selector
    first = run_cmd(repo, "git", "rev-list", "-n1", "generator@v1.0.0").stdout.strip()
    assert artifacts_show("generator", version="v1.0.0", repo=str(repo)) == {
        "rev": first,
        "path": paths.GENERATOR.as_posix(),
    }
