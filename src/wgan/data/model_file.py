"""The model file format: ``{"kind", "kwargs", "state_dict"}``, the constructor arguments beside the weights.

A model is rebuilt from its file alone and loaded with ``torch.load(..., weights_only=True)``. The same
``save_model``/``load_model`` serve the generator, the critic and the classifier (``wgan.classifier.classifier``).

A generator's file also records ``"norm": {"mean", "std"}``, the normalization of the pixels it was trained on, so
that its output maps back to pixels the same way whatever ``params.yaml`` says later (``load_model_and_norm``).
Files written before it was recorded have no ``"norm"``; they still load, and their reader decides the fallback.
"""

from __future__ import annotations

import math
import os
from typing import Any, TypeVar

import torch
from torch import nn

from wgan.errors import UserError, one_line
from wgan.fileio import torch_load_safe, torch_save_atomic
from wgan.paths import rerun

M = TypeVar("M", bound=nn.Module)
Norm = tuple[float, float]  # (mean, std): pixels in [0, 1] were normalized as (x - mean) / std


def save_model(model: nn.Module, path: str | os.PathLike[str], norm: Norm | None = None) -> None:
    """Write ``model`` (a class with ``KIND``, ``STAGE`` and ``init_kwargs()``) atomically, tensors only.

    ``norm``: for a generator, the (mean, std) of the data it was trained on, which maps its output to pixels.
    """
    payload: dict[str, Any] = {"kind": model.KIND, "kwargs": model.init_kwargs(), "state_dict": cpu_state(model)}
    if norm is not None:
        payload["norm"] = {"mean": float(norm[0]), "std": float(norm[1])}
    torch_save_atomic(payload, path)


def load_model(path: str | os.PathLike[str], cls: type[M] | tuple[type[M], ...], hint: str | None = None) -> M:
    """Rebuild a model saved by ``save_model``, in eval mode; any bad file is a ``UserError``.

    ``cls`` is the class expected, or a tuple of classes of one kind to build whichever the file holds: the
    tutorial's and the conditional one (``wgan.models.conditional``: a file is conditional when its kwargs have
    ``n_classes``). A conditional file where only an unconditional class is expected, or the reverse, is refused.
    ``hint`` (how to get a good file) defaults to rerunning the stage that writes such models.
    """
    return load_model_and_norm(path, cls, hint)[0]


def load_model_and_norm(
    path: str | os.PathLike[str], cls: type[M] | tuple[type[M], ...], hint: str | None = None
) -> tuple[M, Norm | None]:
    """``load_model``, and the normalization the file records (None: a file written before files recorded it)."""
    classes = cls if isinstance(cls, tuple) else (cls,)
    kind, hint = classes[0].KIND, hint or rerun(classes[0].STAGE)  # type: ignore[attr-defined]
    raw = torch_load_safe(path, kind, hint)
    if not isinstance(raw, dict) or raw.get("kind") != kind or not isinstance(raw.get("kwargs"), dict):
        raise UserError(f"{path} is not a saved {kind}; {hint}")
    norm = raw.get("norm")
    if norm is not None and not _valid_norm(norm):
        raise UserError(f"{path} does not hold a valid {kind} (its pixel normalization is damaged); {hint}")
    conditional = "n_classes" in raw["kwargs"]
    matching = [c for c in classes if getattr(c, "CONDITIONAL", False) == conditional]
    if not matching:
        held, wanted = ("a conditional", "an unconditional") if conditional else ("an unconditional", "a conditional")
        raise UserError(
            f"{path} holds {held} {kind} but {wanted} one is expected here; train one with "
            f"train.conditional: {str(not conditional).lower()} and {hint}"
        )
    try:
        with torch.device("meta"):  # check sizes against the weights first: absurd ones cost no memory here
            matching[0](**raw["kwargs"]).load_state_dict(raw.get("state_dict"), assign=True)
        model = matching[0](**raw["kwargs"])
        model.load_state_dict(raw["state_dict"])
    except (TypeError, RuntimeError, ValueError, AttributeError) as exc:
        raise UserError(f"{path} does not hold a valid {kind} ({one_line(exc)}); {hint}") from exc
    return model.eval(), None if norm is None else (norm["mean"], norm["std"])


def _valid_norm(norm: Any) -> bool:
    """A recorded normalization: ``{"mean", "std"}``, finite floats, std > 0 (as ``save_model`` writes it)."""
    if not isinstance(norm, dict) or set(norm) != {"mean", "std"}:
        return False
    mean, std = norm["mean"], norm["std"]
    return isinstance(mean, float) and isinstance(std, float) and math.isfinite(mean) and math.isfinite(std) and std > 0


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of ``model``'s state dict: what a file holds, whatever device trained it."""
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}
