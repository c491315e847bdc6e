"""Quality over training (#25): the kept generators, their resume, the quality stage and the best generator
(through the DVC CLI: tests/test_pipeline_full.py); the pick made where nothing is reported (#37): on a held-out
training slice and latents of its own, never the evaluate stage's test split or latents."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
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
from test_classifier import write_toy_splits
from test_evaluate import SMALL, tiny_classifier, tiny_conditional_generator, tiny_generator

from wgan import paths
from wgan.classifier.classifier import RealFeatures, real_features, run_classifier, save_real_features
from wgan.config import QualityConfig
from wgan.data.model_file import save_model
from wgan.data.prepared import load_prepared
from wgan.evaluation.evaluate import build_reference, evaluate, score
from wgan.fileio import file_sha256, torch_load_safe
from wgan.models.conditional import ConditionalGenerator
from wgan.models.networks import Generator
from wgan.models.sampling import balanced_digits, draw_latents, sample, sample_digits
from wgan.paths import CHECKPOINT, KEPT_STATE
from wgan.quality.quality import REFERENCE_SIZE, best_point, held_out, held_out_features, score_over_training
from wgan.training.keep import kept_mismatch, sync_kept
from wgan.training.loop import train

QUALITY = QualityConfig(n_samples=40, batch_size=16, kid_subsets=3, kid_subset_size=20, pr_k=2, seed=0)
EVALUATE = dataclasses.replace(SMALL, n_samples=200)  # its floor every image of toy_real's training split: each digit


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


# ----------------------------------------------------------------------------- the pick, apart from the report (#37)


def toy_real(tmp_path: Path, n_train: int = 200, n_test: int = 50) -> RealFeatures:
    write_toy_splits(tmp_path, n_train=n_train, n_test=n_test)
    train, test = (load_prepared(tmp_path / "data" / "prepared" / f"{s}.pt") for s in ("train", "test"))
    return real_features(tiny_classifier(), train, test)


def test_the_reference_slice_and_the_floor_are_disjoint_training_images_fixed_by_the_seed() -> None:
    reference, floor = held_out(60_000, 2000, 0)  # MNIST's training split, quality's defaults
    assert (len(reference), len(floor)) == (REFERENCE_SIZE, 2000) == (10_000, 2000)
    assert len(set(reference.tolist())) == REFERENCE_SIZE and not set(reference.tolist()) & set(floor.tolist())
    again = held_out(60_000, 2000, 0)
    assert torch.equal(again[0], reference) and torch.equal(again[1], floor)
    assert not torch.equal(held_out(60_000, 2000, 1)[0], reference)
    small = held_out(200, 150, 0)  # a small split: half for the reference, the floor from the rest
    assert (len(small[0]), len(small[1])) == (100, 100) and not set(small[0].tolist()) & set(small[1].tolist())


def test_the_quality_stage_never_reads_the_test_split(tmp_path: Path) -> None:
    """Its sets are rows of the training split; a test split of NaN features changes no number of the curve."""
    real = toy_real(tmp_path)
    held = held_out_features(real, QUALITY)
    reference, floor = held_out(200, QUALITY.n_samples, QUALITY.seed)
    assert torch.equal(held.test.features, real.train.features[reference])
    assert torch.equal(held.train.features, real.train.features[floor])
    assert torch.equal(held.test.labels, real.train.labels[reference])
    generators = [(1, tiny_generator()), (2, tiny_conditional_generator())]
    curve = score_over_training(generators, tiny_classifier(), real, QUALITY)
    blind = dataclasses.replace(
        real, test=dataclasses.replace(real.test, features=torch.full_like(real.test.features, math.nan))
    )
    assert score_over_training(generators, tiny_classifier(), blind, QUALITY) == curve
    assert all(math.isfinite(point["fid"]) for point in curve)
    assert all(point["fid_floor"] > 1e-6 for point in curve)  # other images than the reference (itself: 2e-17)


def _latents_seen(generator: Generator | ConditionalGenerator, run: Callable[..., object], *args: object) -> set:
    """The latent vectors ``generator`` is run on while ``run(*args)`` runs, as exact rows."""
    seen: list[torch.Tensor] = []
    hook = generator.register_forward_pre_hook(lambda _, inputs: seen.append(inputs[0].detach().clone()))
    try:
        run(*args)
    finally:
        hook.remove()
    return {tuple(row) for row in torch.cat(seen).tolist()}


@pytest.mark.parametrize("make", [tiny_generator, tiny_conditional_generator], ids=["plain", "conditional"])
def test_the_quality_stage_draws_no_latent_the_evaluate_stage_draws(
    tmp_path: Path, make: Callable[[], Generator | ConditionalGenerator]
) -> None:
    """quality.seed s and evaluate.seed s' (0..3, the same one included) share no latent vector; evaluate draws more,
    as its defaults do (10,000 to 2000), so its first latents are where a shared seed would show."""
    real, classifier, generator = toy_real(tmp_path), tiny_classifier(), make()
    picked, reported = set(), set()
    for seed in range(4):
        quality = dataclasses.replace(QUALITY, seed=seed)
        scoring = dataclasses.replace(EVALUATE, seed=seed)
        picked |= _latents_seen(generator, score_over_training, [(1, generator)], classifier, real, quality)
        reported |= _latents_seen(generator, evaluate, generator, classifier, real, scoring)
    assert len(picked) == 4 * QUALITY.n_samples and len(reported) == 4 * EVALUATE.n_samples
    assert not picked & reported


@pytest.mark.parametrize("conditional", [False, True], ids=["plain", "conditional"])
def test_the_evaluate_stage_still_scores_the_latents_of_its_seed(tmp_path: Path, conditional: bool) -> None:
    """evaluate's numbers are those of the code before #37, recomputed here step by step: the samples of
    ``draw_latents(evaluate.seed)`` scored against the test split."""
    real, classifier = toy_real(tmp_path), tiny_classifier()
    generator = tiny_conditional_generator() if conditional else tiny_generator()
    cfg = dataclasses.replace(EVALUATE, seed=3)
    if conditional:
        images = sample_digits(generator, balanced_digits(cfg.n_samples), cfg.seed, cfg.batch_size)
    else:
        images = sample(
            generator, draw_latents((cfg.n_samples,), generator.latent_dim, cfg.seed), batch_size=cfg.batch_size
        )
    expected, shares = score(run_classifier(classifier, images, cfg.batch_size), build_reference(real, cfg), cfg)
    result, _, _ = evaluate(generator, classifier, real, cfg)
    assert {key: result[key] for key in expected} == expected
    assert result["class_share"] == {str(d): float(s) for d, s in enumerate(shares)}


def test_the_best_point_is_the_lowest_fid_the_earliest_on_a_tie() -> None:
    curve = [{"epoch": 30, "fid": 2.0}, {"epoch": 20, "fid": 2.0}, {"epoch": 10, "fid": 3.0}, {"epoch": 40, "fid": 2.5}]
    assert best_point(curve) == {"epoch": 20, "fid": 2.0}
    assert best_point(curve[2:]) == {"epoch": 40, "fid": 2.5}


@pytest.mark.slow
def test_quality_stage_scores_the_kept_generators_against_the_held_out_slice(tmp_path: Path) -> None:
    """The stage on stand-in files: a curve point per kept file, the pick copied byte for byte, the reference named
    in its output, and the test split never read (its features NaN here)."""
    write_toy_splits(tmp_path, n_train=200, n_test=50)
    train, test = (load_prepared(tmp_path / "data" / "prepared" / f"{s}.pt") for s in ("train", "test"))
    real = real_features(tiny_classifier(), train, test)
    blind = dataclasses.replace(
        real, test=dataclasses.replace(real.test, features=torch.full_like(real.test.features, math.nan))
    )
    save_real_features(blind, tmp_path / paths.REAL_FEATURES)
    save_model(tiny_classifier(), tmp_path / paths.CLASSIFIER)
    (tmp_path / paths.KEPT).mkdir(parents=True)
    for epoch in (10, 20):
        torch.manual_seed(epoch)
        save_model(Generator(latent_dim=8, hidden=(16, 32)), tmp_path / paths.KEPT / f"epoch_{epoch:04d}.pt")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"quality": dataclasses.asdict(QUALITY)}))
    proc = run_stage_script("quality", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "FID against 100 held-out training images, not the test split" in proc.stdout, proc.stdout
    curve = json.loads((tmp_path / paths.QUALITY_CURVE).read_text())
    assert [point["epoch"] for point in curve] == [10, 20]
    assert all(math.isfinite(point["fid"]) for point in curve)
    best = best_point(curve)
    assert json.loads((tmp_path / paths.QUALITY_METRICS).read_text()) == {
        "best_epoch": best["epoch"],
        "best_fid": best["fid"],
    }
    kept = tmp_path / paths.KEPT / f"epoch_{best['epoch']:04d}.pt"
    assert (tmp_path / paths.BEST_GENERATOR).read_bytes() == kept.read_bytes()
