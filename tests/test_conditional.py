"""The conditional WGAN: models, the projection term, fake labels, training, model files, and the unconditional
path's weights, bit for bit those of the code before the conditional model existed.

Small models and synthetic data, as in test_train.py.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import REPO
from helpers import SMALL, assert_same_state, make_project, run_train, small_cfg, toy_batch

from wgan.data.model_file import load_model, save_model
from wgan.errors import UserError
from wgan.models.conditional import ConditionalGenerator, ProjectionCritic, build_conditional_models
from wgan.models.networks import Generator
from wgan.models.sampling import sample_digits
from wgan.progress import model_summary
from wgan.training.batches import draw_fake_labels, epoch_batches
from wgan.training.cuda_graphs import make_step
from wgan.training.step import M_GP, WGANStep

# The last commit before the conditional model: the unconditional path must train exactly as it did there.
BEFORE_CONDITIONAL = "e7a1d02"


def _models(**overrides: Any) -> tuple[ConditionalGenerator, ProjectionCritic]:
    return build_conditional_models(small_cfg(conditional=True, n_fixed=10, **overrides), torch.device("cpu"))


def test_shapes_and_model_files_record_the_condition(tmp_path: Path) -> None:
    generator, critic = _models()
    z, labels = torch.randn(5, 16), torch.tensor([0, 3, 9, 3, 1])
    images = generator(z, labels)
    assert images.shape == (5, 1, 28, 28) and critic(images, labels).shape == (5, 1)
    save_model(generator, tmp_path / "g.pt")
    loaded = load_model(tmp_path / "g.pt", (Generator, ConditionalGenerator))
    assert isinstance(loaded, ConditionalGenerator) and loaded.n_classes == 10 and loaded.hidden == (32, 64)
    assert torch.equal(loaded(z, labels), generator.eval()(z, labels))
    summary = model_summary(critic, (1, 28, 28), "Critic")
    assert f"Total params: {sum(p.numel() for p in critic.parameters()):,}" in summary and "Embedding" in summary


def test_loading_the_other_kind_of_generator_is_a_one_line_error(tmp_path: Path) -> None:
    save_model(_models()[0], tmp_path / "conditional.pt")
    save_model(Generator(16, (32, 64)), tmp_path / "plain.pt")
    with pytest.raises(UserError, match=r"holds a conditional generator but an unconditional one is expected") as e:
        load_model(tmp_path / "conditional.pt", Generator)
    assert "\n" not in str(e.value) and "train.conditional: false" in str(e.value)
    with pytest.raises(UserError, match=r"holds an unconditional generator but a conditional one is expected"):
        load_model(tmp_path / "plain.pt", ConditionalGenerator)
    assert isinstance(load_model(tmp_path / "plain.pt", (Generator, ConditionalGenerator)), Generator)


def test_projection_critic_is_f_plus_the_label_projection() -> None:
    _, critic = _models()
    x = torch.rand(6, 1, 28, 28) * 2 - 1
    labels = torch.tensor([0, 1, 2, 7, 8, 9])
    phi = critic.net.model[:-1](x.flatten(1))
    f = critic.net.model[-1](phi)
    expected = f + (critic.embed.weight[labels] * phi).sum(1, keepdim=True)
    torch.testing.assert_close(critic(x, labels), expected)
    # the score difference between two labels is exactly the difference of their projections
    other = (labels + 1) % 10
    diff = (critic.embed.weight[labels] - critic.embed.weight[other]) * phi
    torch.testing.assert_close(critic(x, labels) - critic(x, other), diff.sum(1, keepdim=True))


def test_per_digit_batchnorm_starts_as_the_input_conditioned_mlp_and_then_scales_and_shifts() -> None:
    generator = _models()[0].train()
    norms = [i for i, m in enumerate(generator.net.model) if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(generator.modulation) == len(norms) == 1  # SMALL's g_hidden: one BatchNorm
    z, labels = torch.randn(32, 16), torch.arange(32) % 10
    with torch.no_grad():  # zero gain and shift: exactly the MLP over [z, embed(y)]
        inputs = torch.cat([z, generator.embed(labels)], dim=1)
        torch.testing.assert_close(generator(z, labels), generator.net(inputs), rtol=0, atol=0)
        table = generator.modulation[0].weight
        table[3, 0], table[3, table.shape[1] // 2] = 1.0, 0.5  # digit 3, feature 0: gain 1 + 1, shift 0.5
    seen: dict[str, torch.Tensor] = {}
    generator.net.model[norms[0]].register_forward_hook(lambda m, i, out: seen.update(bn=out.detach().clone()))
    generator.net.model[norms[0] + 1].register_forward_pre_hook(lambda m, i: seen.update(next=i[0].detach().clone()))
    generator(z, labels)
    expected = seen["bn"].clone()
    expected[labels == 3, 0] = seen["bn"][labels == 3, 0] * 2 + 0.5  # every other digit and feature: unchanged
    torch.testing.assert_close(seen["next"], expected, rtol=0, atol=1e-6)


def test_generator_output_depends_on_the_label() -> None:
    generator = _models()[0].eval()
    z = torch.randn(4, 16).repeat(10, 1)
    images = generator(z, torch.arange(10).repeat_interleave(4)).view(10, 4, -1)
    for a in range(10):
        for b in range(a):
            assert (images[a] - images[b]).abs().max() > 1e-3, (a, b)


def test_fake_labels_are_uniform_and_drawn_after_the_latents() -> None:
    step = make_step(small_cfg(conditional=True, n_fixed=10), *_models(), torch.Generator().manual_seed(5))
    labels = torch.cat([step._fake_labels(64) for _ in range(300)])  # 19,200 draws over a batch stream
    counts = torch.bincount(labels, minlength=10).float()
    expected = len(labels) / 10
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 27.9, counts  # chi-square, 9 degrees of freedom: p = 0.001

    noise = torch.Generator().manual_seed(5)  # the documented order: latents first, then the fake digits
    z, fake = step._latent(8), step._fake_labels(8)
    step.noise.manual_seed(5)
    assert torch.equal(step._latent(8), torch.randn(8, 16, generator=noise))
    assert torch.equal(step._fake_labels(8), torch.randint(10, (8,), generator=noise))
    assert z.shape == (8, 16) and fake.dtype == torch.int64


def test_fake_labels_are_sliced_by_rank_from_the_whole_batch() -> None:
    whole = draw_fake_labels(torch.Generator().manual_seed(3), 12)
    shares, states = [], []
    for rank in range(4):
        noise = torch.Generator().manual_seed(3)
        shares.append(draw_fake_labels(noise, 3, rank=rank, world_size=4))
        states.append(noise.get_state())
    assert all(len(s) == 3 for s in shares)
    assert torch.equal(torch.stack(shares, dim=1).reshape(-1), whole)  # rank r holds rows r, r + 4, r + 8
    assert all(torch.equal(s, states[0]) for s in states)  # the ranks' streams stay in step


def test_batches_carry_the_labels_of_their_images() -> None:
    images = torch.arange(40, dtype=torch.float32).view(40, 1, 1, 1)
    labels = torch.arange(40) % 10
    shuffle = torch.Generator().manual_seed(0)
    for real, y in epoch_batches(images, 8, shuffle, rank=1, world_size=2, labels=labels):
        assert y is not None and torch.equal(y, real.flatten().long() % 10) and len(y) == 4


def test_conditional_steps_train_both_models_with_clipping_and_with_the_penalty() -> None:
    for loss, optimizer in (("wgan", "rmsprop"), ("wgan-gp", "adam")):
        cfg = small_cfg(conditional=True, n_fixed=10, loss=loss, optimizer=optimizer, lr=1e-3)
        generator, critic = build_conditional_models(cfg, torch.device("cpu"))
        step = WGANStep(cfg, generator, critic, torch.Generator().manual_seed(0))
        embed_before = critic.embed.weight.detach().clone()
        g_before = generator.embed.weight.detach().clone()
        for i in range(3):
            step(toy_batch(seed=i), i, torch.randint(10, (32,)))
        assert not torch.equal(critic.embed.weight, embed_before) and not torch.equal(generator.embed.weight, g_before)
        assert all(table.weight.abs().sum() > 0 for table in generator.modulation)  # the per-digit BatchNorm trains
        if loss == "wgan":
            assert max(p.abs().max().item() for p in critic.parameters()) <= cfg.clip_value
        else:
            assert step.take_metrics()[M_GP] > 0


class _DigitOnlyCritic(torch.nn.Module):
    """A critic whose score depends on the digit alone: an offset per digit (the image enters with weight 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.offset = torch.nn.Parameter(torch.zeros(10))

    def forward(self, img: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.offset[labels].unsqueeze(1) + 0 * img.flatten(1).sum(1, keepdim=True)


@pytest.mark.parametrize(("loss", "optimizer"), [("wgan", "rmsprop"), ("wgan-gp", "adam")])
def test_a_score_of_the_digit_alone_gains_the_critic_nothing(loss: str, optimizer: str) -> None:
    """The critic's fakes carry the real batch's digits, so per-digit offsets cancel in every batch, however
    skewed its digits: nothing drives them (with uniform fake digits they grew to +-1000 in 40 epochs of the
    conditional recipe, unchecked by the penalty, which sees only the image)."""
    cfg = small_cfg(conditional=True, n_fixed=10, loss=loss, optimizer=optimizer, lr=1e-2)
    generator, _ = build_conditional_models(cfg, torch.device("cpu"))
    critic = _DigitOnlyCritic()
    step = WGANStep(cfg, generator, critic, torch.Generator().manual_seed(0))
    for i in range(5):
        step.critic_step(toy_batch(seed=i), torch.full((32,), 1))  # a batch of ones only
    assert torch.equal(critic.offset.detach(), torch.zeros(10))


def test_conditional_run_snapshots_one_row_per_digit_and_is_deterministic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = {"conditional": True, "epochs": 2, "n_fixed": 25, "log_every": 4}
    first = run_train(make_project(tmp_path / "a"), monkeypatch, small_cfg(**params))
    assert first.samples.labels is not None and first.samples.labels.tolist() == [d for d in range(10) for _ in "ab"]
    last = first.samples.images[-1]
    assert last.shape == (20, 1, 28, 28)
    second = run_train(make_project(tmp_path / "b"), monkeypatch, small_cfg(**{**params, "log_every": 7}))
    assert_same_state(first.generator.state_dict(), second.generator.state_dict())
    assert_same_state(first.critic.state_dict(), second.critic.state_dict())
    with pytest.raises(UserError, match=r"train.n_fixed = 8 is too small for a conditional run"):
        run_train(make_project(tmp_path / "c"), monkeypatch, small_cfg(conditional=True, n_fixed=8))


def test_sample_digits_gives_the_asked_digits_independent_of_batching() -> None:
    generator = _models()[0]
    digits = [7, 7, 0, 3, 9]
    images = sample_digits(generator, digits, seed=4, batch_size=2)
    assert images.shape == (5, 1, 28, 28)
    z = torch.randn(5, 16, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(images, generator.eval()(z, torch.tensor(digits)))
    torch.testing.assert_close(images, sample_digits(generator, digits, seed=4, batch_size=500))
    with pytest.raises(ValueError, match=r"digits must be in 0..9, got \[10\]"):
        sample_digits(generator, [10], seed=0)


_REFERENCE_RUN = """
import sys, torch
from wgan.config import parse_section
from wgan.paths import TrainPaths
try:
    from wgan.training.loop import train
except ImportError:  # the flat layout before src/wgan/training/
    from wgan.train import train
out = {}
for loss, optimizer in (("wgan", "rmsprop"), ("wgan-gp", "adam")):
    cfg = parse_section("train", {**SMALL, "loss": loss, "optimizer": optimizer, "epochs": 2, "log_every": 5})
    result = train(cfg, TrainPaths(), device=torch.device("cpu"), log=lambda _: None)
    out[loss] = {**result.generator.state_dict(), **{"D." + k: v for k, v in result.critic.state_dict().items()}}
torch.save(out, sys.argv[1])
"""


def _weights(code: Path, root: Path) -> dict[str, dict[str, torch.Tensor]]:
    script = f"SMALL = {SMALL!r}\n{_REFERENCE_RUN}"
    env = {"PYTHONPATH": str(code), "WGAN_DEVICE": "cpu", "OMP_NUM_THREADS": "2", "PATH": ""}
    subprocess.run([sys.executable, "-c", script, str(root / "w.pt")], cwd=root, env=env, check=True)
    return torch.load(root / "w.pt", weights_only=True)


@pytest.mark.slow
@pytest.mark.long  # two trainings in fresh interpreters, like the other bit-identity checks against old code
def test_unconditional_weights_are_bit_identical_to_the_code_before_this_model(tmp_path: Path) -> None:
    """Both losses, trained by this code and by the code of BEFORE_CONDITIONAL (read from git), same params.

    Options added since (``train.critic_lr``) are at their defaults here: they must change nothing.
    """
    archive = subprocess.run(
        ["git", "archive", "--format=tar", BEFORE_CONDITIONAL, "src"], cwd=REPO, capture_output=True
    )
    if archive.returncode != 0:
        pytest.skip(f"git history without {BEFORE_CONDITIONAL} (a shallow clone?)")
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(tmp_path / "before", filter="data")
    before = _weights(tmp_path / "before/src", make_project(tmp_path / "a"))
    now = _weights(REPO / "src", make_project(tmp_path / "b"))
    for loss in ("wgan", "wgan-gp"):
        assert_same_state(before[loss], now[loss])
    assert not torch.equal(before["wgan"]["model.0.weight"], before["wgan-gp"]["model.0.weight"])
