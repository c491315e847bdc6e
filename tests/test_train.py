"""The training loop: gradient flow, schedule, outputs, DVCLive metrics, determinism, resume and errors.

Small models and synthetic data (random uint8 images) keep each test to seconds; the stage script runs in
a temp dir with its own params.yaml, as DVC would run it from the repo root.
"""

from __future__ import annotations

import json
import math
import runpy
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import (
    STAGE,
    assert_same_state,
    clone_params,
    kept_generators,
    kill_after_epochs,
    load_state,
    make_project,
    read_tsv,
    run_train,
    small_cfg,
    small_step,
    start_stage,
    toy_batch,
    write_split,
)

from wgan.config import parse_section
from wgan.data.model_file import load_model, load_model_and_norm
from wgan.data.prepared import load_prepared
from wgan.data.samples import SAMPLES_FORMAT
from wgan.device import choose_device
from wgan.errors import UserError
from wgan.fileio import torch_load_safe
from wgan.models.networks import Critic, Generator
from wgan.paths import CHECKPOINT
from wgan.progress import model_summary
from wgan.training.batches import batch_indices
from wgan.training.live import M_HELDOUT, M_RATE, run_record
from wgan.training.step import M_CRITIC, M_GENERATOR, M_GP, M_WASSERSTEIN

# --- one step: gradient flow, clipping, schedule, metrics -------------------------------------------------------


def test_generator_step_trains_g_through_a_frozen_critic() -> None:
    step = small_step(lr=1e-3)
    g_before, d_before = clone_params(step.generator.parameters()), clone_params(step.critic.parameters())
    step.generator_step(32, 0)
    for p in step.generator.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0  # gradients flowed through D into G
    assert all(not torch.equal(p.detach(), b) for p, b in zip(step.generator.parameters(), g_before, strict=True))
    for p, b in zip(step.critic.parameters(), d_before, strict=True):
        assert torch.equal(p.detach(), b) and p.grad is None  # D was frozen...
        assert p.requires_grad  # ...and is trainable again afterwards


def test_critic_step_updates_and_clamps_d_but_leaves_g() -> None:
    step = small_step(lr=0.05, clip_value=0.01)
    g_before, d_before = clone_params(step.generator.parameters()), clone_params(step.critic.parameters())
    step.critic_step(toy_batch())
    assert all(torch.equal(p.detach(), b) for p, b in zip(step.generator.parameters(), g_before, strict=True))
    assert all(p.grad is None for p in step.generator.parameters())  # fakes were made under no_grad
    for p, b in zip(step.critic.parameters(), d_before, strict=True):
        assert p.abs().max().item() <= 0.01
        assert not torch.equal(p.detach(), b)


def test_gp_critic_step_is_not_clipped_and_reports_the_penalty() -> None:
    step = small_step(loss="wgan-gp", optimizer="adam", lr=0.05, gp_lambda=10.0)
    for _ in range(3):
        step.critic_step(toy_batch())
    assert max(p.abs().max().item() for p in step.critic.parameters()) > 0.05  # no clipping
    metrics = step.take_metrics()
    assert metrics[M_GP] > 0
    assert metrics[M_CRITIC] == pytest.approx(metrics[M_GP] - metrics[M_WASSERSTEIN], rel=1e-5)


def test_schedule_and_metric_averages() -> None:
    step = small_step(n_critic=5)
    for i in range(11):
        step(toy_batch(seed=i), i)
    assert (step.critic_count, step.generator_count) == (11, 3)  # iterations 0, 5 and 10
    metrics = step.take_metrics()
    assert set(metrics) == {M_CRITIC, M_WASSERSTEIN, M_GENERATOR}  # no penalty entry without wgan-gp
    assert metrics[M_CRITIC] == pytest.approx(-metrics[M_WASSERSTEIN])
    assert all(math.isfinite(v) for v in metrics.values())
    assert step.take_metrics() == {}  # reset after reading


def test_batch_indices_shard_a_batch_across_ranks() -> None:
    perm = torch.randperm(100, generator=torch.Generator().manual_seed(0))
    full = batch_indices(perm, 2, 8)
    assert torch.equal(full, perm[16:24])
    shards = [batch_indices(perm, 2, 8, rank, 4) for rank in range(4)]
    assert sorted(torch.cat(shards).tolist()) == sorted(full.tolist()) and all(len(s) == 2 for s in shards)


def test_model_summary_counts_and_leaves_the_model_alone() -> None:
    generator = Generator(16, (32, 64))
    generator.train()
    before = {k: v.clone() for k, v in generator.state_dict().items()}
    text = model_summary(generator, (16,), "Generator")
    assert f"Total params: {sum(p.numel() for p in generator.parameters()):,}" in text
    assert text.startswith("Generator\n") and "[2, 64]" in text and "[2, 1, 28, 28]" in text and "BatchNorm1d" in text
    assert generator.training
    assert_same_state(before, generator.state_dict())


# --- device -----------------------------------------------------------------------------------------------------


def test_device_override_and_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WGAN_DEVICE", "cpu")
    assert choose_device() == torch.device("cpu")
    for bad in ("gpu", "meta", "cuda:99"):
        monkeypatch.setenv("WGAN_DEVICE", bad)
        with pytest.raises(UserError, match="WGAN_DEVICE"):
            choose_device()
    monkeypatch.delenv("WGAN_DEVICE")
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert choose_device().type == expected


# --- whole runs (in process) ------------------------------------------------------------------------------------


def test_outputs_and_metrics_are_sane(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    params = {"epochs": 3, "log_every": 4, "sample_interval": 7, "loss": "wgan-gp", "optimizer": "adam", "lr": 1e-3}
    root = make_project(
        tmp_path, n_train=330, precision="bf16", **params
    )  # 10 batches of 32 an epoch, 10 images dropped
    monkeypatch.chdir(root)
    monkeypatch.setenv("WGAN_DEVICE", "cpu")
    runpy.run_path(str(STAGE), run_name="__main__")  # returns normally on success (no SystemExit)

    generator = load_model("models/generator.pt", Generator)
    assert isinstance(generator, Generator) and generator.hidden == (32, 64)
    assert isinstance(load_model("models/critic.pt", Critic), Critic)
    for path in ["models/generator.pt", *kept_generators(root).values()]:  # the data's normalization, for `wgan sample`
        assert load_model_and_norm(path, Generator)[1] == (0.5, 0.5), path

    samples = torch_load_safe("models/samples.pt", "samples", "")
    assert samples["format"] == SAMPLES_FORMAT
    assert samples["images"].dtype == torch.uint8 and samples["images"].shape == (6, 8, 1, 28, 28)
    assert samples["iteration"].tolist() == [0, 7, 14, 21, 28, 30]  # every 7 iterations, from 0, and the end
    assert samples["epoch"].tolist() == [0, 0, 1, 2, 2, 2]
    assert samples["images"][0].float().std() > 0

    ckpt = torch_load_safe(CHECKPOINT, "checkpoint", "")
    assert ckpt["finished"] and ckpt["iteration"] == 30

    rows = read_tsv(root / "dvclive/plots/metrics/train/critic_loss.tsv")
    assert [int(r["step"]) for r in rows] == [4, 8, 12, 16, 20, 24, 28, 30]
    summary = json.loads((root / "dvclive/metrics.json").read_text())
    assert summary["step"] == 30
    for name in (M_CRITIC, M_GENERATOR, M_WASSERSTEIN, M_GP, M_HELDOUT, M_RATE):
        group, key = name.split("/")
        assert math.isfinite(summary[group][key]), name
        assert (root / f"dvclive/plots/metrics/{name}.tsv").is_file(), name
    assert summary["train"]["gradient_penalty"] > 0 and summary["perf"]["iters_per_sec"] > 0
    assert summary["run"] == {"device": "cpu", "precision": "bf16"}  # text entries, for dvc exp show
    assert not (root / "dvclive/plots/metrics/run").exists()  # no curve of them
    assert not list(root.glob("dvclive/dvc.yaml"))  # the lead declares the plots in the project's dvc.yaml


def test_the_run_record_names_the_precision_mode() -> None:
    assert run_record(torch.device("cpu"), "fp32") == {"run/device": "cpu", "run/precision": "fp32"}
    assert run_record(torch.device("cpu"), "bf16") == {"run/device": "cpu", "run/precision": "bf16"}


def test_same_seed_gives_bit_identical_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = run_train(make_project(tmp_path / "a"), monkeypatch, small_cfg(epochs=2, log_every=3))
    # logging and sampling use no random stream and no training statistic, so their cadence changes nothing
    second = run_train(make_project(tmp_path / "b"), monkeypatch, small_cfg(epochs=2, log_every=7, sample_interval=2))
    assert_same_state(first.generator.state_dict(), second.generator.state_dict())
    assert_same_state(first.critic.state_dict(), second.critic.state_dict())
    other = run_train(make_project(tmp_path / "c"), monkeypatch, small_cfg(epochs=2, log_every=3, seed=1))
    assert not torch.equal(other.generator.model[0].weight, first.generator.model[0].weight)


def test_max_iterations_stops_early(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run_train(
        make_project(tmp_path), monkeypatch, small_cfg(epochs=5, max_iterations=13, log_every=5, sample_interval=100)
    )
    assert result.iterations == 13
    assert result.samples.iteration == [0, 13] and result.samples.epoch == [0, 1]
    assert json.loads(Path("dvclive/metrics.json").read_text())["step"] == 13
    assert torch_load_safe(CHECKPOINT, "checkpoint", "")["iteration"] == 13


def _unfinish(path: Path) -> None:
    """Mark a finished checkpoint as if its run had been killed (resumable)."""
    ckpt = torch_load_safe(path, "checkpoint", "")
    ckpt["finished"] = False
    torch.save(ckpt, path)


def test_checkpoint_from_other_params_or_data_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_project(tmp_path)
    run_train(root, monkeypatch, small_cfg(epochs=1))
    _unfinish(root / CHECKPOINT)
    capsys.readouterr()
    changed = run_train(root, monkeypatch, small_cfg(epochs=1, lr=1e-4))
    assert f"ignoring checkpoint {CHECKPOINT}: it was made with other train params (lr: 5e-05 -> 0.0001)" in (
        capsys.readouterr().out
    )
    fresh = run_train(make_project(tmp_path / "fresh"), monkeypatch, small_cfg(epochs=1, lr=1e-4))
    assert_same_state(changed.generator.state_dict(), fresh.generator.state_dict())

    _unfinish(root / CHECKPOINT)
    write_split(root / "data/prepared/train.pt", 320, seed=7)
    run_train(root, monkeypatch, small_cfg(epochs=1, lr=1e-4))
    assert "it was made with other prepared data" in capsys.readouterr().out

    run_train(root, monkeypatch, small_cfg(epochs=1, lr=1e-4))  # the checkpoint left by that run is finished
    assert "holds a finished run; training again from scratch" in capsys.readouterr().out


def test_bf16_on_a_cpu_without_bf16_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_project(tmp_path)
    for supported in (False, True):
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda s=supported: s)
        run_train(root, monkeypatch, small_cfg(max_iterations=2, precision="bf16"))
        assert ("no native bfloat16 support" in capsys.readouterr().out) is not supported


# --- errors through the stage script -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "env", "message"),
    [
        ({"batch_size": 500}, "cpu", "error: train.batch_size = 500 is larger than the training split (320 images)"),
        ({}, "gpu", "error: WGAN_DEVICE='gpu' is not a device name"),
        ({}, "cuda:7", "error: WGAN_DEVICE='cuda:7' but"),
    ],
)
def test_user_errors_exit_2_with_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    params: dict[str, Any],
    env: str,
    message: str,
) -> None:
    root = make_project(tmp_path, **params)
    monkeypatch.chdir(root)
    monkeypatch.setenv("WGAN_DEVICE", env)
    monkeypatch.delenv("WGAN_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(STAGE), run_name="__main__")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and "\n" not in err
    assert not (root / "models/generator.pt").exists()


# --- resume after SIGKILL (subprocesses) -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.long  # a stage killed mid-run, then resumed (test_reliability's signals keep resume in make test)
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    params = {"epochs": 8, "batch_size": 16, "log_every": 10, "sample_interval": 25}
    killed = make_project(tmp_path / "kill", n_train=512, **params)  # 32 iterations an epoch
    kill_after_epochs(killed, 2)
    assert not (killed / "models/generator.pt").exists()

    resumed = start_stage(killed)
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert f"resuming from {CHECKPOINT}: " in out

    # the uninterrupted run, in this process but with the subprocesses' single thread
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        full = make_project(tmp_path / "full", n_train=512, **params)
        reference = run_train(full, monkeypatch, small_cfg(**params))
    finally:
        torch.set_num_threads(threads)
    assert_same_state(reference.generator.state_dict(), load_state(killed / "models/generator.pt"))
    assert_same_state(reference.critic.state_dict(), load_state(killed / "models/critic.pt"))
    samples = torch_load_safe(killed / "models/samples.pt", "samples", "")
    assert torch.equal(reference.samples.to_payload()["images"], samples["images"])
    assert reference.samples.iteration == samples["iteration"].tolist()
    for name in (M_CRITIC, M_GENERATOR, M_WASSERSTEIN, M_HELDOUT):  # the rate is timing, the rest is exact
        assert read_tsv(full / f"dvclive/plots/metrics/{name}.tsv") == read_tsv(
            killed / f"dvclive/plots/metrics/{name}.tsv"
        )


# --- real MNIST (slow) ------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.long  # a real training, 1-2 minutes
def test_real_mnist_generator_learns_the_background(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, real_prepared: Path
) -> None:
    for name in ("train.pt", "test.pt"):
        target = tmp_path / "data/prepared" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(real_prepared / name)
    mnist = load_prepared(real_prepared / "train.pt")
    real_share = (mnist.images < -0.9).float().mean().item()
    cfg = parse_section("train", {"max_iterations": 400, "log_every": 100, "sample_interval": 200, "n_fixed": 256})
    result = run_train(tmp_path, monkeypatch, cfg)
    summary = json.loads(Path("dvclive/metrics.json").read_text())
    assert all(math.isfinite(v) for group in ("train", "test") for v in summary[group].values())
    images = result.samples.images  # uint8; value < -0.9 in [-1, 1] is a pixel below 0.05 * 255
    shares = [(s.float() / 255 < 0.05).float().mean().item() for s in images]
    # measured on CPU: 0.0 at init, ~0.57 after 200 and 400 iterations; MNIST ~0.82
    assert abs(shares[-1] - real_share) < 0.5 * abs(shares[0] - real_share), (shares, real_share)
