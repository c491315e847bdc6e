"""A pydantic validation error as this project's one line: the key, the value and what is allowed.

For example ``unknown key 'train.n_crtic'; did you mean 'n_critic'?``.
"""

from __future__ import annotations

import difflib
import reprlib
import typing
from typing import Annotated, Any, Literal

import yaml
from pydantic import ValidationError

from wgan.config.schema import INT_MAX, SECTIONS

_REPR = reprlib.Repr()  # values in messages: bounded (a YAML alias bomb has a huge repr), always one line
_REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict, _REPR.maxlevel = 60, 60, 8, 8, 3
show = _REPR.repr

_UNKNOWN = {"unexpected_keyword_argument", "extra_forbidden", "invalid_key"}
_RANGE = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}
_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))


def message(section: str, raw: dict[Any, Any], exc: ValidationError) -> str:
    """The first problem pydantic found (unknown keys first, as they explain the rest), in one line."""
    errors = exc.errors()
    err = next((e for e in errors if e["type"] in _UNKNOWN), errors[0])
    field_name, *index = err["loc"]
    cls = SECTIONS[section]
    if err["type"] in _UNKNOWN or field_name not in cls.__pydantic_fields__:
        key = next((k for k in raw if name_of(k) == str(field_name)), field_name)
        return f"unknown key '{section}.{name_of(key)}'; {unknown_hint(key, cls.__pydantic_fields__)}"
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
        return f"{key} = {show(shown)} is out of range: allowed{_range_text(metadata)}"
    if err["type"] == "finite_number":
        return f"{key} = {show(value)} is invalid: expected a finite number{_range_text(metadata)}"
    return f"{key} = {show(value)} is invalid: expected {allowed}"


def allowed_text(section: str, key: str) -> str:
    """What ``section.key`` accepts, in the words its error messages use (docs/params.md shows the same words)."""
    info = SECTIONS[section].__pydantic_fields__[key]
    return _allowed(info.annotation, list(info.metadata)) + _range_text(list(info.metadata), type_error=True)


def as_yaml(value: Any) -> str:
    """A value as params.yaml spells it, on one line: ``5.0e-05``, ``[128, 256]``, ``false``, ``wgan``."""
    value = list(value) if isinstance(value, tuple) else value
    return yaml.safe_dump([value], default_flow_style=True, width=1 << 30).strip()[1:-1]


def name_of(key: Any) -> str:
    """A key as the user wrote it, on one line."""
    text = str(key)
    return text if text.isprintable() and len(text) <= 60 else show(text)


def unknown_hint(key: Any, known: typing.Iterable[str]) -> str:
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
