"""The tutorial's MLP generator and critic, with their shapes as constructor arguments; one model file format.

A saved model file holds ``{"kind", "kwargs", "state_dict"}``: the constructor arguments beside the weights,
so a model is rebuilt from its file alone and loaded with ``torch.load(..., weights_only=True)``. The same
``save_model``/``load_model`` serve the generator, the critic and the classifier (``wgan.classifier``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any, TypeVar

import torch
from torch import nn

from wgan.config import TrainConfig
from wgan.data import IMAGE_SHAPE
from wgan.errors import UserError, one_line
from wgan.fileio import torch_load_safe, torch_save_atomic
from wgan.paths import rerun


class Generator(nn.Module):
    """latent -> hidden MLP (BatchNorm on all but the first block, LeakyReLU 0.2) -> tanh image."""

    KIND = "generator"  # saved model files name their kind
    STAGE = "train"  # the stage that writes them

    def __init__(
        self,
        latent_dim: int = 100,
        hidden: Sequence[int] = (128, 256, 512, 1024),
        img_shape: Sequence[int] = IMAGE_SHAPE,
    ) -> None:
        super().__init__()
        self.latent_dim = int(latent_dim)
        self.hidden = tuple(int(h) for h in hidden)
        self.img_shape = tuple(int(s) for s in img_shape)
        layers: list[nn.Module] = []
        width = self.latent_dim
        for i, out in enumerate(self.hidden):
            layers.append(nn.Linear(width, out))
            if i > 0:
                layers.append(nn.BatchNorm1d(out))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            width = out
        layers += [nn.Linear(width, math.prod(self.img_shape)), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model(z).view(z.shape[0], *self.img_shape)

    def init_kwargs(self) -> dict[str, Any]:
        return {"latent_dim": self.latent_dim, "hidden": list(self.hidden), "img_shape": list(self.img_shape)}


class Critic(nn.Module):
    """image -> hidden MLP (LeakyReLU 0.2) -> one unbounded score; no sigmoid, no BatchNorm."""

    KIND = "critic"
    STAGE = "train"

    def __init__(self, img_shape: Sequence[int] = IMAGE_SHAPE, hidden: Sequence[int] = (512, 256)) -> None:
        super().__init__()
        self.img_shape = tuple(int(s) for s in img_shape)
        self.hidden = tuple(int(h) for h in hidden)
        layers: list[nn.Module] = []
        width = math.prod(self.img_shape)
        for out in self.hidden:
            layers += [nn.Linear(width, out), nn.LeakyReLU(0.2, inplace=True)]
            width = out
        layers.append(nn.Linear(width, 1))
        self.model = nn.Sequential(*layers)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.model(img.reshape(img.shape[0], -1))

    def init_kwargs(self) -> dict[str, Any]:
        return {"img_shape": list(self.img_shape), "hidden": list(self.hidden)}


def build_models(cfg: TrainConfig, device: torch.device) -> tuple[Generator, Critic]:
    """Both models, initialized from ``train.seed`` on the CPU (same weights on every device), then moved."""
    torch.manual_seed(cfg.seed)
    generator = Generator(cfg.latent_dim, cfg.g_hidden, IMAGE_SHAPE)
    critic = Critic(IMAGE_SHAPE, cfg.d_hidden)
    return generator.to(device), critic.to(device)


M = TypeVar("M", bound=nn.Module)


def save_model(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Write ``model`` (a class with ``KIND``, ``STAGE`` and ``init_kwargs()``) atomically, tensors only."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch_save_atomic({"kind": model.KIND, "kwargs": model.init_kwargs(), "state_dict": state}, path)


def load_model(path: str | os.PathLike[str], cls: type[M] | tuple[type[M], ...], hint: str | None = None) -> M:
    """Rebuild a model saved by ``save_model``, in eval mode; any bad file is a ``UserError``.

    ``cls`` is the class expected, or a tuple of classes of one kind to build whichever the file holds: the
    tutorial's and the conditional one (``wgan.conditional``: a file is conditional when its kwargs have
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
