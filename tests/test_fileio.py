"""Atomic and durable writes (wgan.fileio): the bytes are on the device before the rename, the rename after it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from wgan import fileio

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names fsynced fds through /proc")


def _record_fsyncs(monkeypatch: pytest.MonkeyPatch, base: Path, watched: Path) -> list[tuple[str, bool]]:
    """Every fsync from here on, as (the path synced, relative to ``base``; whether ``watched`` exists then)."""
    calls: list[tuple[str, bool]] = []
    fsync = os.fsync

    def recording(fd: int) -> None:
        synced = Path(os.readlink(f"/proc/self/fd/{fd}"))
        calls.append((synced.relative_to(base).as_posix(), watched.exists()))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recording)
    return calls


def test_an_atomic_write_syncs_the_file_then_its_folder_after_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out" / "metrics.json"
    calls = _record_fsyncs(monkeypatch, tmp_path, target)
    fileio.write_json(target, {"fid": 1.0})
    assert [(name.split("/")[-1].startswith(".metrics.json."), there) for name, there in calls[:-1]] == [(True, False)]
    assert calls[-1] == ("out", True)  # the folder, once the renamed file is in it
    assert target.read_text() == '{\n  "fid": 1.0\n}\n'


def test_a_replaced_folder_syncs_its_files_before_the_swap_and_its_parent_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "results" / "grids"
    target.mkdir(parents=True)
    (target / "old.png").write_bytes(b"old")
    calls = _record_fsyncs(monkeypatch, tmp_path, target / "new.png")
    with fileio.replaced_dir(target) as tmp:
        (tmp / "new.png").write_bytes(b"new")
    synced_before = [name for name, there in calls if not there]
    assert any(name.endswith("/new.png") for name in synced_before), calls  # in the temporary folder
    assert calls[-1] == ("results", True)
    assert sorted(p.name for p in target.iterdir()) == ["new.png"]


def test_copy_dir_replaces_a_folder_and_stale_temp_folders_are_removed(tmp_path: Path) -> None:
    source, target = tmp_path / "state", tmp_path / "models" / "kept"
    (source / "sub").mkdir(parents=True)
    (source / "epoch_0001.pt").write_bytes(b"one")
    (source / "sub" / "x").write_bytes(b"x")
    target.mkdir(parents=True)
    (target / "epoch_0009.pt").write_bytes(b"an older run's")
    fileio.copy_dir(source, target)
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == ["epoch_0001.pt", "sub", "sub/x"]

    stale = target.parent / ".kept.abc123.tmp"  # a copy_dir killed before its swap
    (stale / "sub").mkdir(parents=True)
    assert fileio.remove_stale_temps(target) == [stale]
    assert not stale.exists() and (target / "epoch_0001.pt").is_file()
