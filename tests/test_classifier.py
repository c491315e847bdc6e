"""The digit classifier on tiny synthetic data: it learns, it is deterministic, its files round-trip."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from conftest import run_stage_script

from wgan.classifier.classifier import (
    N_CLASSES,
    Classifier,
    accuracy,
    run_classifier,
    train_classifier,
)
from wgan.config import ClassifierConfig
from wgan.data.model_file import load_model, save_model
from wgan.data.prepared import save_prepared, to_uint8
from wgan.errors import UserError
from wgan.models.networks import Generator

TINY = {"channels": [2, 4], "feature_dim": 8}
CFG = ClassifierConfig(epochs=8, batch_size=16, lr=1e-2, seed=0)


def toy_digits(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in [-1, 1] whose class is the row band that is lit, plus noise: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % N_CLASSES
    images = torch.rand(n, 1, 28, 28, generator=g) * 0.4 - 1.0
    for i, c in enumerate(labels.tolist()):
        images[i, 0, 2 * c + 4 : 2 * c + 7, 4:24] = 1.0
    return images, labels


def test_training_learns_the_toy_task_and_is_deterministic() -> None:
    images, labels = toy_digits(200, seed=0)
    a = train_classifier(images, labels, CFG, **TINY)
    b = train_classifier(images, labels, CFG, **TINY)
    for (name, wa), wb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(wa, wb), name
    c = train_classifier(images, labels, dataclasses.replace(CFG, seed=1), **TINY)
    assert not torch.equal(a.fc.weight, c.fc.weight)
    test_images, test_labels = toy_digits(100, seed=1)
    scores = accuracy(a, test_images, test_labels, batch_size=7)
    assert scores["accuracy"] >= 0.9
    assert 0 < scores["test_loss"] < 0.5
    assert not a.training


def test_run_classifier_gives_batch_independent_features_and_probs() -> None:
    torch.manual_seed(0)
    model = Classifier(**TINY).eval()
    images, _ = toy_digits(23, seed=2)
    out = run_classifier(model, images, batch_size=5)
    assert out.features.shape == (23, 8) and out.probs.shape == (23, N_CLASSES)
    assert (out.features >= 0).all()
    assert torch.allclose(out.probs.sum(1), torch.ones(23))
    whole = run_classifier(model, images, batch_size=100)
    assert torch.allclose(whole.features, out.features, atol=1e-6)
    assert torch.allclose(whole.probs, torch.softmax(model(images), 1), atol=1e-6)


def test_save_load_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Classifier(**TINY)
    path = tmp_path / "models" / "classifier.pt"
    save_model(model, path)
    raw = torch.load(path, weights_only=True)
    assert raw["kind"] == "classifier" and raw["kwargs"] == TINY
    loaded = load_model(path, Classifier)
    assert not loaded.training
    images, _ = toy_digits(10, seed=3)
    assert torch.equal(loaded(images), model.eval()(images))


def test_bad_classifier_files_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="missing; rerun `dvc repro classifier`"):
        load_model(tmp_path / "absent.pt", Classifier)
    good = tmp_path / "good.pt"
    save_model(Classifier(**TINY), good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:100])
    with pytest.raises(UserError, match="cannot be loaded"):
        load_model(truncated, Classifier)
    foreign = tmp_path / "generator.pt"
    save_model(Generator(latent_dim=4, hidden=(8,)), foreign)
    with pytest.raises(UserError, match="is not a saved classifier"):
        load_model(foreign, Classifier)
    mismatched = tmp_path / "mismatched.pt"
    raw = torch.load(good, weights_only=True)
    raw["kwargs"]["feature_dim"] = 9
    torch.save(raw, mismatched)
    with pytest.raises(UserError, match="does not hold a valid classifier"):
        load_model(mismatched, Classifier)


def write_toy_splits(root: Path, n_train: int, n_test: int) -> None:
    """Prepared train/test files of toy digits under ``root/data/prepared``, as the prepare stage writes them."""
    for name, n, seed in (("train", n_train, 10), ("test", n_test, 11)):
        images, labels = toy_digits(n, seed)
        save_prepared(root / "data" / "prepared" / f"{name}.pt", to_uint8(images, 0.5, 0.5), labels, 0.5, 0.5)


@pytest.mark.slow
def test_classifier_stage_end_to_end(tmp_path: Path) -> None:
    write_toy_splits(tmp_path, n_train=300, n_test=100)
    (tmp_path / "params.yaml").write_text("classifier:\n  epochs: 1\n  batch_size: 32\n  lr: 0.003\n  seed: 0\n")
    proc = run_stage_script("classifier", tmp_path)
    assert proc.returncode == 0, proc.stderr
    scores = json.loads((tmp_path / "results" / "classifier" / "metrics.json").read_text())
    assert set(scores) == {"accuracy", "test_loss"}
    assert 0.0 <= scores["accuracy"] <= 1.0 and scores["test_loss"] > 0
    assert load_model(tmp_path / "models" / "classifier.pt", Classifier).feature_dim == 128

    (tmp_path / "data" / "prepared" / "test.pt").write_bytes(b"not a torch file")
    proc = run_stage_script("classifier", tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "test.pt" in proc.stderr and "Traceback" not in proc.stderr
