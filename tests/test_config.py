"""params.yaml sections load into typed configs; every kind of bad value is a one-line UserError."""

import pytest
import yaml
from conftest import REPO

from wgan.config import SECTIONS, load_section, parse_section, read_params
from wgan.errors import UserError


def test_repo_params_load_and_list_every_key():
    params = read_params(REPO / "params.yaml")
    for name, cls in SECTIONS.items():
        cfg = load_section(name, REPO / "params.yaml")
        assert isinstance(cfg, cls)
        # every key is written out, so `dvc params diff` shows every knob
        assert set(params[name]) == set(cls.__dataclass_fields__), name


def test_defaults_are_the_tutorials():
    cfg = load_section("train", REPO / "params.yaml")
    assert (cfg.epochs, cfg.batch_size, cfg.latent_dim, cfg.n_critic, cfg.sample_interval) == (200, 64, 100, 5, 400)
    assert (cfg.lr, cfg.clip_value, cfg.optimizer, cfg.loss) == (5e-5, 0.01, "rmsprop", "wgan")


@pytest.mark.parametrize("text", ["lr: 1e-4", "lr: 0.0001", "lr: 1.0e-4", "lr: '1e-4'"])
def test_scientific_notation_loads_as_float(text):
    cfg = parse_section("train", yaml.safe_load(text))
    assert isinstance(cfg.lr, float)
    assert cfg.lr == pytest.approx(1e-4)


@pytest.mark.parametrize(
    ("raw", "fragments"),
    [
        ({"n_crtic": 5}, ["train.n_crtic", "did you mean 'n_critic'"]),
        ({"epochs": "ten"}, ["train.epochs", "'ten'", "integer"]),
        ({"epochs": 2.5}, ["train.epochs", "integer"]),
        ({"lr": "fast"}, ["train.lr", "'fast'", "number"]),
        ({"lr": 0}, ["train.lr", "out of range", "> 0"]),
        ({"lr": -1e-4}, ["train.lr", "out of range"]),
        ({"n_critic": 0}, ["train.n_critic", ">= 1"]),
        ({"clip_value": 0.0}, ["train.clip_value", "> 0"]),
        ({"sample_interval": 0}, ["train.sample_interval", ">= 1"]),
        ({"loss": "hinge"}, ["train.loss", "'wgan'", "'wgan-gp'"]),
        ({"lr": float("nan")}, ["train.lr", "finite"]),
        ({"lr": float("inf")}, ["train.lr", "finite"]),
        ({"betas": [0.5]}, ["train.betas", "two numbers"]),
        ({"epochs": True}, ["train.epochs", "integer"]),
        ({"ema_start": -1}, ["train.ema_start", ">= 0"]),
        ({"ema_start": 3}, ["train.ema_start = 3", "train.ema_decay is 0", "set ema_decay"]),
        ({"ema_decay": 0.999, "ema_start": 200}, ["train.ema_start = 200", "train.epochs = 200", "never start"]),
    ],
)
def test_bad_train_values_name_key_value_and_rule(raw, fragments):
    with pytest.raises(UserError) as err:
        parse_section("train", raw)
    message = str(err.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_yaml_nan_and_inf_are_rejected():
    for text in ("lr: .nan", "lr: .inf", "lr: -.inf"):
        with pytest.raises(UserError, match="finite"):
            parse_section("train", yaml.safe_load(text))


def test_other_sections_validate_too():
    with pytest.raises(UserError, match=r"render\.nrow"):
        parse_section("render", {"nrow": 0})
    with pytest.raises(UserError, match=r"gif\.duration_ms"):
        parse_section("gif", {"duration_ms": 0})
    with pytest.raises(UserError, match=r"prepare\.std"):
        parse_section("prepare", {"std": 0})
    with pytest.raises(UserError, match=r"data\.source"):
        parse_section("data", {"source": "ftp"})
    with pytest.raises(UserError, match="true or false"):
        parse_section("render", {"caption": "yes"})


def test_missing_file_and_missing_section(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_section("train", tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("prepare: {mean: 0.5, std: 0.5}\n")
    with pytest.raises(UserError, match="section 'train' is missing"):
        load_section("train", tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("train: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_section("train", tmp_path / "params.yaml")


def test_omitted_keys_take_defaults():
    # in a stage's own load; the params stage refuses the omission in a tracked section (test_params_stage.py)
    assert parse_section("train", {"epochs": 3}) == SECTIONS["train"](epochs=3)


@pytest.mark.parametrize(
    ("mean", "std"),
    [(0.5, 0.5), (0.5, 1.0), (0.3, 0.7), (0.0, 1.0), (1.0, 1.0), (0.5, 0.499), (0.5 + 0.9 / 510, 0.5)],
)
def test_a_normalization_the_generators_tanh_can_reach_black_and_white_with(mean, std):
    """mean - std <= 0 and mean + std >= 1 give every uint8 grey level (to within the half level that rounds away)."""
    assert parse_section("prepare", {"mean": mean, "std": std}) == SECTIONS["prepare"](mean=mean, std=std)


@pytest.mark.parametrize(
    ("mean", "std", "reach"),
    [
        (0.1307, 0.3081, "[0, 0.439]"),  # MNIST's usual Normalize
        (0.5, 0.25, "[0.25, 0.75]"),
        (0.5, 0.498, "[0.002, 0.998]"),  # beyond half a grey level
        (0.9, 0.5, "[0.4, 1]"),
    ],
)
def test_a_normalization_the_generators_tanh_cannot_reach_black_and_white_with(mean, std, reach):
    with pytest.raises(UserError) as err:
        parse_section("prepare", {"mean": mean, "std": std})
    assert str(err.value) == (
        f"prepare.mean = {mean:g} and prepare.std = {std:g} let the generator (tanh: mean ± std) draw only the pixels "
        f"{reach} of [0, 1]; use mean 0.5 and std 0.5, which map [0, 1] onto [-1, 1], or a std of at least "
        "max(mean, 1 - mean)"
    )


def test_a_conditional_run_needs_a_snapshot_row_per_digit() -> None:
    """A rule of the train section alone, so the params stage refuses it before any stage runs."""
    with pytest.raises(UserError, match=r"^train.n_fixed = 8 is too small for a conditional run.*at least 10$"):
        parse_section("train", {"conditional": True, "n_fixed": 8})
    assert parse_section("train", {"conditional": True, "n_fixed": 10}).n_fixed == 10
    assert parse_section("train", {"n_fixed": 8}).n_fixed == 8  # the tutorial's model shows any number
