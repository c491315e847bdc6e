"""Quality over training (#25): the kept generators, their resume, the quality stage and the best generator
(through the DVC CLI: tests/test_pipeline_full.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from conftest import run_stage_script
from helpers import (
    assert_same_state,
    kept_generators,
    kill_after_epochs,
    load_state,
    make_project,
    run_train,
    small_cfg,
    start_stage,
)

from wgan.fileio import file_sha256, torch_load_safe
from wgan.paths import CHECKPOINT, KEPT_STATE
from wgan.training.keep import kept_mismatch, sync_kept
from wgan.training.loop import train


def test_kept_epochs_and_weights_bit_identical_with_keeping_on_and_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = {"epochs": 5, "ema_decay": 0.9}  # the averaged generator: keeping recomputes its BatchNorm statistics
    often = run_train(make_project(tmp_path / "often"), monkeypatch, small_cfg(keep_every=2, **params))
    seldom = run_train(make_project(tmp_path / "seldom"), monkeypatch, small_cfg(keep_every=5, **params))
    often_kept, seldom_kept = kept_generators(tmp_path / "often"), kept_generators(tmp_path / "seldom")
    assert sorted(often_kept) == [2, 4, 5]  # every 2nd epoch, and the end
    assert sorted(seldom_kept) == [5]
    for a, b in ((often.generator, seldom.generator), (often.critic, seldom.critic)):
        assert_same_state(a.state_dict(), b.state_dict())
    assert torch.equal(often.samples.to_payload()["images"], seldom.samples.to_payload()["images"])
    # the end kept is the sampling (averaged) generator, the one models/generator.pt gets
    assert_same_state(load_state(often_kept[5]), often.generator.state_dict())
    assert_same_state(load_state(often_kept[5]), load_state(seldom_kept[5]))


def test_a_run_cut_short_keeps_its_end_in_the_epoch_it_stopped_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_train(make_project(tmp_path), monkeypatch, small_cfg(max_iterations=15, keep_every=1))  # 10 an epoch
    assert sorted(kept_generators(tmp_path)) == [1, 2]


def test_a_fresh_run_removes_an_older_runs_kept_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_project(tmp_path)
    run_train(root, monkeypatch, small_cfg(epochs=4, keep_every=1))
    run_train(root, monkeypatch, small_cfg(epochs=2, keep_every=1))  # other params: trains from scratch
    assert sorted(kept_generators(root)) == [1, 2]


def test_a_resume_keeps_the_listed_files_and_names_a_missing_or_changed_one(tmp_path: Path) -> None:
    folder = tmp_path / "kept"
    folder.mkdir()
    (folder / "epoch_0001.pt").write_bytes(b"one")
    (folder / "epoch_0002.pt").write_bytes(b"two, kept after the checkpoint")
    kept = {"epoch_0001.pt": file_sha256(folder / "epoch_0001.pt")}
    assert kept_mismatch(folder, kept) == ""
    sync_kept(folder, kept, True, lambda _: None)
    assert sorted(p.name for p in folder.iterdir()) == ["epoch_0001.pt"]
    (folder / "epoch_0001.pt").write_bytes(b"another run's")
    assert kept_mismatch(folder, kept) == f"its kept generator {folder / 'epoch_0001.pt'} has changed"
    (folder / "epoch_0001.pt").unlink()
    assert kept_mismatch(folder, kept) == f"its kept generator {folder / 'epoch_0001.pt'} is missing"


def test_a_checkpoint_without_its_kept_generators_starts_afresh_saying_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run state's kept copies are gone (a finished run drops them; here the checkpoint is marked unfinished
    again, as if killed before it was marked): the checkpoint cannot be resumed, and the run trains from scratch to
    the same weights, saying so in one line."""
    cfg = small_cfg(epochs=2, keep_every=1)
    first = run_train(make_project(tmp_path), monkeypatch, cfg)
    ckpt = torch_load_safe(CHECKPOINT, "checkpoint", "")
    torch.save({**ckpt, "finished": False}, CHECKPOINT)
    assert not KEPT_STATE.exists()
    messages: list[str] = []
    second = train(cfg, device=torch.device("cpu"), log=messages.append)
    missing = KEPT_STATE / "epoch_0001.pt"
    assert (
        f"ignoring checkpoint {CHECKPOINT}: its kept generator {missing} is missing; training from scratch" in messages
    )
    assert not [m for m in messages if m.startswith("resuming")]
    assert_same_state(first.generator.state_dict(), second.generator.state_dict())
    assert sorted(kept_generators(tmp_path)) == [1, 2]


@pytest.mark.slow
@pytest.mark.long  # a stage killed after two epochs, then resumed
def test_killed_run_resumes_with_exactly_the_kept_generators(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    params = {"epochs": 8, "batch_size": 16, "log_every": 10, "sample_interval": 25, "keep_every": 3}
    killed = make_project(tmp_path / "kill", n_train=512, **params)  # 32 iterations an epoch
    kill_after_epochs(killed, 4)
    assert (killed / KEPT_STATE / "epoch_0003.pt").is_file()  # in the run state until the run delivers
    assert not (killed / "models/kept").exists()
    (killed / KEPT_STATE / "epoch_0006.pt").write_bytes(b"a file the checkpoint does not list")
    resumed = start_stage(killed)
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert f"resuming from {CHECKPOINT}" in out and f"removed {KEPT_STATE / 'epoch_0006.pt'}" in out
    assert not (killed / KEPT_STATE).exists()  # delivered to models/kept, then dropped

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the subprocesses' single thread
    try:
        run_train(make_project(tmp_path / "full", n_train=512, **params), monkeypatch, small_cfg(**params))
    finally:
        torch.set_num_threads(threads)
    full, got = kept_generators(tmp_path / "full"), kept_generators(killed)
    assert sorted(got) == sorted(full) == [3, 6, 8]
    for epoch in full:
        assert_same_state(load_state(full[epoch]), load_state(got[epoch]))


@pytest.mark.slow
def test_quality_stage_without_kept_generators_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"quality": {}}))
    proc = run_stage_script("quality", tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: the kept generators' folder models/kept is missing; rerun `dvc repro train`")
