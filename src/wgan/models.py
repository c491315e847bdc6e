"""The tutorial's MLP generator and critic, with their shapes as constructor arguments.

Saved model files hold the constructor arguments beside the state dict, so a model can be
rebuilt from its file alone and loaded with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any, TypeVar

import torch
from torch import nn

from wgan.errors import UserError, first_line
from wgan.fileio import torch_load_safe, torch_save_atomic

IMG_SHAPE = (1, 28, 28)


class Generator(nn.Module):
    """latent -> hidden MLP (BatchNorm on all but the first block, LeakyReLU 0.2) -> tanh image."""

    def __init__(
        self, latent_dim: int = 100, hidden: Sequence[int] = (128, 256, 512, 1024), img_shape: Sequence[int] = IMG_SHAPE
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

    def __init__(self, img_shape: Sequence[int] = IMG_SHAPE, hidden: Sequence[int] = (512, 256)) -> None:
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


M = TypeVar("M", bound=nn.Module)

_KINDS: dict[str, type[nn.Module]] = {"generator": Generator, "critic": Critic}


def save_module(model: nn.Module, kind: str, path: str | os.PathLike[str]) -> None:
    """Write ``{"kind", "kwargs", "state_dict"}`` atomically; tensors only, so weights_only loading works.

    ``model`` must have ``init_kwargs()``: the constructor arguments that rebuild it.
    """
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch_save_atomic({"kind": kind, "kwargs": model.init_kwargs(), "state_dict": state}, path)


def load_module(path: str | os.PathLike[str], kind: str, cls: type[M], hint: str) -> M:
    """Rebuild a module saved by ``save_module`` (in eval mode), with one clear error for any bad file."""
    raw = torch_load_safe(path, kind, hint)
    if not isinstance(raw, dict) or raw.get("kind") != kind or not isinstance(raw.get("kwargs"), dict):
        raise UserError(f"{path} is not a saved {kind}; {hint}")
    try:
        with torch.device("meta"):  # check sizes against the weights first: absurd ones cost no memory here
            cls(**raw["kwargs"]).load_state_dict(raw.get("state_dict"), assign=True)
        model = cls(**raw["kwargs"])
        model.load_state_dict(raw["state_dict"])
    except (TypeError, RuntimeError, ValueError, AttributeError) as exc:
        raise UserError(f"{path} does not hold a valid {kind} ({first_line(exc)}); {hint}") from exc
    return model.eval()


def save_model(model: Generator | Critic, path: str | os.PathLike[str]) -> None:
    """Save a generator or critic with the constructor arguments that rebuild it."""
    save_module(model, "generator" if isinstance(model, Generator) else "critic", path)


def load_model(path: str | os.PathLike[str], kind: str, hint: str = "rerun `dvc repro train`") -> nn.Module:
    """Rebuild a saved generator or critic (in eval mode) from its file, with clear errors."""
    return load_module(path, kind, _KINDS[kind], hint)


def load_generator(path: str | os.PathLike[str], hint: str = "rerun `dvc repro train`") -> Generator:
    """The trained generator, in eval mode (BatchNorm uses its running statistics)."""
    model = load_model(path, "generator", hint)
    assert isinstance(model, Generator)
    return model
