"""The model file format: ``{"kind", "kwargs", "state_dict"}``, the constructor arguments beside the weights.

A model is rebuilt from its file alone and loaded with ``torch.load(..., weights_only=True)``. The same
``save_model``/``load_model`` serve the generator, the critic and the classifier (``wgan.evaluation.classifier``).
"""

from __future__ import annotations

import os
from typing import TypeVar

import torch
from torch import nn

from wgan.errors import UserError, one_line
from wgan.fileio import torch_load_safe, torch_save_atomic
from wgan.paths import rerun

M = TypeVar("M", bound=nn.Module)


def save_model(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Write ``model`` (a class with ``KIND``, ``STAGE`` and ``init_kwargs()``) atomically, tensors only."""
    torch_save_atomic({"kind": model.KIND, "kwargs": model.init_kwargs(), "state_dict": cpu_state(model)}, path)


def load_model(path: str | os.PathLike[str], cls: type[M] | tuple[type[M], ...], hint: str | None = None) -> M:
    """Rebuild a model saved by ``save_model``, in eval mode; any bad file is a ``UserError``.

    ``cls`` is the class expected, or a tuple of classes of one kind to build whichever the file holds: the
    tutorial's and the conditional one (``wgan.models.conditional``: a file is conditional when its kwargs have
    ``n_classes``). A conditional file where only an unconditional class is expected, or the reverse, is refused.
    ``hint`` (how to get a good file) defaults to rerunning the stage that writes such models.
    """
    classes = cls if isinstance(cls, tuple) else (cls,)
    kind, hint = classes[0].KIND, hint or rerun(classes[0].STAGE)  # type: ignore[attr-defined]
    raw = torch_load_safe(path, kind, hint)
    if not isinstance(raw, dict) or raw.get("kind") != kind or not isinstance(raw.get("kwargs"), dict):
        raise UserError(f"{path} is not a saved {kind}; {hint}")
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
    return model.eval()


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of ``model``'s state dict: what a file holds, whatever device trained it."""
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}
