"""Reading ``params.yaml``: a section into its typed config, or the whole file with the rules between sections.

``check_params`` validates the whole file: the `params` stage runs it before any other stage, so a bad value
fails before DVC deletes any output. It also refuses a key left out of a section that DVC tracks: the default in
``schema.py`` would decide outputs while no stage's deps see it. ``parse_section`` alone (each stage's own load)
fills omitted keys with the defaults, so a stage script still runs on a partial file outside the pipeline.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from wgan.config.messages import as_yaml, message, name_of, show, unknown_hint
from wgan.config.schema import MNIST_TEST_SIZE, SECTIONS
from wgan.errors import UserError
from wgan.paths import tracked_sections

PARAMS_FILE = "params.yaml"
# The one recovery hint for a bad params.yaml. Not `git checkout`: after a rejected `dvc exp run`, DVC's
# experiment machinery can leave git's index stat-clean over the edited file, and checkout then restores nothing.
RESTORE_HINT = "`git show HEAD:params.yaml > params.yaml` writes the committed values back"
_ADAPTERS = {name: TypeAdapter(cls) for name, cls in SECTIONS.items()}


def read_params(path: str | os.PathLike[str] = PARAMS_FILE) -> dict[str, Any]:
    """Read ``params.yaml`` into a dict, with a clear error when it is missing or not YAML."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p} not found; run from the project root, or restore it: {RESTORE_HINT}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise UserError(f"{p} is not UTF-8 text (byte {exc.start}); restore it: {RESTORE_HINT}") from exc
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
        raise UserError(f"section '{name}' is missing from {path}; add it (docs/params.md lists its keys)")
    return parse_section(name, params[name])


def parse_section(name: str, raw: Any) -> Any:
    """Validate a raw mapping against the config class of section ``name`` (omitted keys take defaults)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"section '{name}' must be a mapping of keys, got {show(raw)}")
    try:
        return _ADAPTERS[name].validate_python(raw)
    except ValidationError as exc:
        raise UserError(message(name, raw, exc)) from None


def check_params(path: str | os.PathLike[str] = PARAMS_FILE) -> dict[str, Any]:
    """Validate every section of the params file and the rules between sections; return the configs.

    Unknown sections are refused too (``trian:`` would otherwise be ignored while ``train`` took its defaults).
    """
    params = read_params(path)
    for key in params:
        if key not in SECTIONS:
            raise UserError(f"unknown section '{name_of(key)}' in {path}; {unknown_hint(key, SECTIONS)}")
    missing = [name for name in SECTIONS if name not in params]
    if missing:
        raise UserError(f"section '{missing[0]}' is missing from {path}; add it (docs/params.md lists its keys)")
    cfg = {name: parse_section(name, params[name]) for name in SECTIONS}
    _check_written_out(params, path)
    train, render = cfg["train"], cfg["render"]
    if render.n_images > train.n_fixed:
        raise UserError(
            f"render.n_images = {render.n_images} is larger than train.n_fixed = {train.n_fixed} "
            "(the samples in each snapshot); lower render.n_images or raise train.n_fixed"
        )
    for name in ("quality", "evaluate"):
        _check_scoring(name, cfg[name])
    return cfg


def _check_written_out(params: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Every key of every section DVC tracks is written in the file (the sections parsed already, so none is unknown).

    An omitted key takes its default from ``schema.py``, which is outside every stage's deps: a change of that
    default would change outputs while DVC sees nothing. ``data`` is not tracked (every source gives the same
    bytes), so its keys may be left to their defaults.
    """
    omitted = [
        f"{name}.{key}"
        for name in SECTIONS
        if name in tracked_sections()
        for key in SECTIONS[name].__pydantic_fields__
        if key not in (params[name] or {})
    ]
    if not omitted:
        return
    (first, *rest), shown = omitted, 3
    name, key = first.split(".")
    default = as_yaml(getattr(defaults(name), key))
    also = f"; also missing: {', '.join(rest[:shown])}" if rest else ""
    also += f" and {len(rest) - shown} more (docs/params.md lists every default)" if len(rest) > shown else ""
    raise UserError(
        f"{first} is missing from {path}, so it would take its default {default} from the code, which DVC does "
        f"not track; add `{key}: {default}` to the {name} section{also}"
    )


def _check_scoring(name: str, scoring: Any) -> None:
    """A scoring section's sizes against the sets it scores: samples, the test split, real subsets."""
    smallest = min(scoring.n_samples, MNIST_TEST_SIZE)
    if scoring.kid_subset_size > smallest:
        raise UserError(
            f"{name}.kid_subset_size = {scoring.kid_subset_size} is larger than the smallest set scored "
            f"({smallest}: {name}.n_samples, at most the {MNIST_TEST_SIZE} real images it is compared with); lower it"
        )
    if scoring.pr_k >= smallest:
        raise UserError(
            f"{name}.pr_k = {scoring.pr_k} needs more than {scoring.pr_k} images in every set scored "
            f"(smallest: {smallest}); lower it or raise {name}.n_samples"
        )


def defaults(name: str) -> Any:
    """The default config of section ``name`` (what an empty section means)."""
    return SECTIONS[name]()


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, YAML/JSON-friendly dict of a config object (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}
