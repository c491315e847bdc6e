"""The tutorial's MLP generator and critic, with their shapes as constructor arguments.

Each records its constructor arguments (``init_kwargs``) so that ``wgan.data.model_file`` rebuilds it from its
file alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from wgan.config import TrainConfig
from wgan.data.prepared import IMAGE_SHAPE


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
