"""The conditional WGAN (``train.conditional: true``): ask the generator for a digit, judge it with a projection critic.

* Generator: the latent vector concatenated with a learned embedding of the digit, then the tutorial's MLP
  whose BatchNorm outputs are also scaled and shifted per digit (conditional BatchNorm, as the projection
  paper's generator): ``bn(x) * (1 + gain[y]) + shift[y]``, starting from gain = shift = 0.
* Critic: Miyato & Koyama's projection critic ("cGANs with Projection Discriminator", 2018), on the tutorial's
  MLP: ``D(x, y) = f(phi(x)) + <embed(y), phi(x)>``, where ``phi`` is the MLP's last hidden layer and ``f``
  its final linear layer. It needs no change to the losses: weight clipping clips the embedding too, and the
  gradient penalty is taken with respect to the image, the label held fixed.

Model files record ``n_classes`` in their kwargs: that is what makes a saved model conditional, and
``wgan.data.model_file.load_model`` refuses a conditional file where an unconditional model is expected, or the reverse.

Labels: real ones come with the batch (gathered with the same indices as the images); fake ones are drawn by
``wgan.training.batches.draw_fake_labels``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from wgan.config import TrainConfig
from wgan.data.prepared import IMAGE_SHAPE, N_CLASSES
from wgan.models.networks import Critic, Generator


class ConditionalGenerator(nn.Module):
    """(latent, digit) -> the tutorial's generator MLP over ``[z, embed(digit)]``, BatchNorms modulated per digit."""

    KIND = "generator"  # the same kind and stage as the tutorial's: one models/generator.pt
    STAGE = "train"
    CONDITIONAL = True  # takes a label per input (checked by wgan.data.model_file.load_model)

    def __init__(
        self,
        latent_dim: int = 100,
        hidden: Sequence[int] = (128, 256, 512, 1024),
        img_shape: Sequence[int] = IMAGE_SHAPE,
        n_classes: int = N_CLASSES,
        embed_dim: int = N_CLASSES,
    ) -> None:
        super().__init__()
        self.latent_dim, self.n_classes, self.embed_dim = int(latent_dim), int(n_classes), int(embed_dim)
        self.embed = nn.Embedding(self.n_classes, self.embed_dim)
        self.net = Generator(self.latent_dim + self.embed_dim, hidden, img_shape)
        self.hidden, self.img_shape = self.net.hidden, self.net.img_shape
        # Measured (docs/results.md, "Conditional"): with the digit at the input alone, 20 epochs of the WGAN-GP recipe
        # drew the asked digit 92% of the time (8 and 9 at 78%); a per-digit gain and shift after every
        # BatchNorm carries the digit through every layer. Zero-initialized: training starts from the model above.
        norms = [m for m in self.net.model if isinstance(m, nn.BatchNorm1d)]
        self.modulation = nn.ModuleList(nn.Embedding(self.n_classes, 2 * m.num_features) for m in norms)
        for table in self.modulation:
            nn.init.zeros_(table.weight)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = torch.cat([z, self.embed(labels).to(z.dtype)], dim=1)
        tables = iter(self.modulation)
        for layer in self.net.model:
            x = layer(x)
            if isinstance(layer, nn.BatchNorm1d):  # GlobalBatchNorm (several processes) is one too
                gain, shift = next(tables)(labels).to(x.dtype).chunk(2, dim=1)
                x = x * (1 + gain) + shift
        return x.view(z.shape[0], *self.img_shape)

    def init_kwargs(self) -> dict[str, Any]:
        return {
            "latent_dim": self.latent_dim,
            "hidden": list(self.hidden),
            "img_shape": list(self.img_shape),
            "n_classes": self.n_classes,
            "embed_dim": self.embed_dim,
        }


class ProjectionCritic(nn.Module):
    """(image, digit) -> ``f(phi(x)) + <embed(digit), phi(x)>``: the tutorial's critic MLP plus a projection term."""

    KIND = "critic"
    STAGE = "train"
    CONDITIONAL = True

    def __init__(
        self, img_shape: Sequence[int] = IMAGE_SHAPE, hidden: Sequence[int] = (512, 256), n_classes: int = N_CLASSES
    ) -> None:
        super().__init__()
        self.net = Critic(img_shape, hidden)
        self.img_shape, self.hidden, self.n_classes = self.net.img_shape, self.net.hidden, int(n_classes)
        self.embed = nn.Embedding(self.n_classes, self.hidden[-1])
        nn.init.xavier_uniform_(self.embed.weight)  # as Miyato's code: N(0, 1) would swamp f(x) at the start

    def forward(self, img: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        layers = self.net.model
        phi = layers[:-1](img.reshape(img.shape[0], -1))  # the last hidden layer's activations
        projection = (self.embed(labels) * phi.float()).sum(dim=1, keepdim=True)
        return layers[-1](phi) + projection

    def init_kwargs(self) -> dict[str, Any]:
        return {"img_shape": list(self.img_shape), "hidden": list(self.hidden), "n_classes": self.n_classes}


def build_conditional_models(cfg: TrainConfig, device: torch.device) -> tuple[ConditionalGenerator, ProjectionCritic]:
    """Both conditional models, initialized from ``train.seed`` on the CPU (as ``networks.build_models``)."""
    torch.manual_seed(cfg.seed)
    generator = ConditionalGenerator(cfg.latent_dim, cfg.g_hidden, IMAGE_SHAPE, N_CLASSES)
    critic = ProjectionCritic(IMAGE_SHAPE, cfg.d_hidden, N_CLASSES)
    return generator.to(device), critic.to(device)


def label_args(labels: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """The extra call argument of a conditional model, ``(labels,)``; the tutorial's models (None) take none."""
    return () if labels is None else (labels,)


def digit_rows(per_digit: int, n_classes: int = N_CLASSES) -> torch.Tensor:
    """The labels ``0..0, 1..1, ..., 9..9`` (``per_digit`` each): one row per digit in the snapshot grids."""
    return torch.arange(n_classes).repeat_interleave(per_digit)
