"""The averaged generator (train.ema_decay): the average's math, its BatchNorm statistics, and what samples from it."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch
from helpers import assert_same_state, clone_params, make_project, run_train, small_cfg, small_step, toy_batch

from wgan.data.prepared import to_uint8
from wgan.fileio import torch_load_safe
from wgan.models.networks import Generator, build_models
from wgan.paths import CHECKPOINT
from wgan.training.batches import derive_seed
from wgan.training.ema import BN_SAMPLES, recompute_batchnorm
from wgan.training.step import WGANStep


def test_average_follows_each_generator_step_and_training_is_unchanged() -> None:
    plain, averaged = small_step(lr=1e-3, n_critic=2), small_step(lr=1e-3, n_critic=2, ema_decay=0.9)
    assert plain.ema is None and averaged.ema is not None
    expected = clone_params(averaged.generator.parameters())  # the average starts at the initial weights
    for i in range(6):
        plain(toy_batch(seed=i), i)
        averaged(toy_batch(seed=i), i)
        if i % 2 == 0:  # a generator step: average <- 0.9 average + 0.1 live
            live = averaged.generator.parameters()
            expected = [torch.lerp(a, p.detach(), 0.1) for a, p in zip(expected, live, strict=True)]
    # the live generator trains bit for bit as without averaging
    assert_same_state(plain.generator.state_dict(), averaged.generator.state_dict())
    assert_same_state(plain.critic.state_dict(), averaged.critic.state_dict())
    average = list(averaged.ema.model.parameters())
    assert all(torch.equal(a, e) for a, e in zip(average, expected, strict=True))
    assert not torch.equal(average[0], averaged.generator.model[0].weight)
    assert not any(p.requires_grad for p in average)


def test_a_later_start_copies_the_live_generator_until_its_iteration() -> None:
    cfg = small_cfg(lr=1e-3, n_critic=2, ema_decay=0.9)
    plain = small_step(lr=1e-3, n_critic=2)
    late = WGANStep(
        cfg, *build_models(cfg, torch.device("cpu")), torch.Generator().manual_seed(0), ema_start_iteration=4
    )
    assert late.ema is not None
    for i in range(8):
        plain(toy_batch(seed=i), i)
        late(toy_batch(seed=i), i)
        live = clone_params(late.generator.parameters())
        if i < 4:  # the generator steps of iterations 0 and 2 come before the start: a copy
            expected = live
        elif i % 2 == 0:  # iterations 4 and 6: average <- 0.9 average + 0.1 live, from the copy of iteration 2
            expected = [torch.lerp(a, p, 0.1) for a, p in zip(expected, live, strict=True)]
        average = list(late.ema.model.parameters())
        assert all(torch.equal(a, e) for a, e in zip(average, expected, strict=True)), i
    assert not torch.equal(average[0], late.generator.model[0].weight)  # moving since iteration 4
    assert_same_state(plain.generator.state_dict(), late.generator.state_dict())  # training is untouched


def test_batchnorm_statistics_are_recomputed_for_the_averaged_weights() -> None:
    step = small_step(lr=1e-2, ema_decay=0.5)
    for i in range(10):
        step(toy_batch(seed=i), i)
    model = step.ema.ready(step.autocast)
    norm = model.model[3]  # Linear, LeakyReLU, Linear, BatchNorm1d: the first BatchNorm of g_hidden [32, 64]
    assert isinstance(norm, torch.nn.BatchNorm1d) and not model.training and norm.momentum == 0.1

    z = torch.randn(BN_SAMPLES, 16, generator=torch.Generator().manual_seed(derive_seed(0, "ema-batchnorm")))
    pre = model.model[:3](z)  # what the BatchNorm sees for the averaged weights
    torch.testing.assert_close(norm.running_mean, pre.mean(0))
    torch.testing.assert_close(norm.running_var, pre.var(0))  # unbiased, as BatchNorm keeps it
    live = step.generator.model[3]
    assert not torch.allclose(norm.running_mean, live.running_mean)  # not the live generator's statistics

    stats = clone_params(model.buffers())
    step.ema._stale = True
    assert all(torch.equal(a, b) for a, b in zip(stats, step.ema.ready(step.autocast).buffers(), strict=True))

    no_norm = Generator(16, [32])  # the first hidden block has no BatchNorm: nothing to do
    recompute_batchnorm(no_norm, 0, contextlib.nullcontext)


def test_a_run_samples_from_the_average_and_checkpoints_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    params = {"epochs": 2, "log_every": 4, "sample_interval": 7, "lr": 1e-3}
    plain = run_train(make_project(tmp_path / "plain"), monkeypatch, small_cfg(**params))
    result = run_train(make_project(tmp_path / "ema"), monkeypatch, small_cfg(**params, ema_decay=0.9))
    ckpt = torch_load_safe(CHECKPOINT, "checkpoint", "")
    assert_same_state(ckpt["generator"], plain.generator.state_dict())  # the live generator, as without averaging
    assert_same_state(ckpt["step"]["ema"], result.generator.state_dict())  # the average is the run's generator
    assert not torch.equal(result.generator.model[0].weight, plain.generator.model[0].weight)
    assert "ema" not in torch_load_safe(tmp_path / "plain" / CHECKPOINT, "checkpoint", "")["step"]

    # the last snapshot is the average (eval mode, its own statistics) on the fixed latent vectors
    assert result.samples.iteration[-1] == result.iterations == 20
    fixed_z = torch.randn(8, 16, generator=torch.Generator().manual_seed(derive_seed(0, "fixed")))
    with torch.no_grad():
        assert torch.equal(result.samples.images[-1], to_uint8(result.generator.eval()(fixed_z), 0.5, 0.5))
    assert not torch.equal(result.samples.images[-1], plain.samples.images[-1])


@pytest.mark.parametrize(("iterations", "moved"), [(10, False), (11, True)], ids=["epoch-1", "epoch-2-began"])
def test_ema_start_is_counted_in_epochs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, iterations: int, moved: bool
) -> None:
    """10 batches an epoch and n_critic 5: iteration 10, the first of epoch 2, is the first generator step to move
    the average; until then it is the live generator's weights."""
    cfg = small_cfg(epochs=2, lr=1e-3, ema_decay=0.9, ema_start=1, max_iterations=iterations)
    result = run_train(make_project(tmp_path), monkeypatch, cfg)
    live = torch_load_safe(CHECKPOINT, "checkpoint", "")["generator"]
    same = [torch.equal(p, live[name]) for name, p in result.generator.named_parameters()]
    assert same == [not moved] * len(same)


def test_score_checkpoint_rebuilds_the_run_s_generators(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run_train(make_project(tmp_path), monkeypatch, small_cfg(epochs=1, ema_decay=0.9))
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import score_checkpoint

    ckpt = torch_load_safe(CHECKPOINT, "checkpoint", "")
    found = score_checkpoint.generators(ckpt)
    assert_same_state(found["live"].state_dict(), ckpt["generator"])
    assert_same_state(found["average, statistics recomputed"].state_dict(), result.generator.state_dict())
    copied = found["average, live statistics"].state_dict()
    assert torch.equal(copied["model.3.running_var"], ckpt["generator"]["model.3.running_var"])
    assert torch.equal(copied["model.0.weight"], result.generator.model[0].weight)


def test_a_conditional_run_with_averaging_trains_and_writes_its_average(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The two options together: the average of a conditional generator recomputes its BatchNorm per digit."""
    from wgan.data.model_file import load_model, save_model
    from wgan.models.conditional import ConditionalGenerator
    from wgan.training.loop import train

    root = make_project(tmp_path, n_fixed=10)
    monkeypatch.chdir(root)
    result = train(
        small_cfg(max_iterations=12, conditional=True, ema_decay=0.9, n_fixed=10), device=torch.device("cpu")
    )
    save_model(result.generator, root / "g.pt")
    generator = load_model(root / "g.pt", ConditionalGenerator)
    assert generator.n_classes == 10 and len(result.samples) == 2
    assert all(torch.isfinite(p).all() for p in generator.parameters())
