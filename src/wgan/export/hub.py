"""The Hugging Face folder: ``config.json`` and ``model.safetensors``, read back by ``from_pretrained``.

``HubGenerator`` is huggingface_hub's ``PyTorchModelHubMixin`` over the project's generator: its constructor
arguments are ``config.json`` (the generator's own ``init_kwargs`` plus the normalization ``prepare.mean``,
``prepare.std``), its state dict is ``model.safetensors``, and its output is already in pixel space, in [0, 1]
(``round(255 * x)`` is the 8-bit grey level ``wgan sample`` writes). The ONNX file and the page compute the same.

    from wgan.export.hub import HubGenerator
    model = HubGenerator.from_pretrained("models/export")        # or "user/repo" on the Hub
    pixels = model(torch.randn(16, model.latent_dim))             # conditional: model(z, digits)

A local folder whose config does not match its weights, or that lacks either file, is a one-line ``UserError``:
the mixin's default would load with ``strict=False`` and leave missing layers at their random initial values.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from huggingface_hub import PyTorchModelHubMixin, constants
from safetensors import SafetensorError
from torch import nn

from wgan.data.prepared import IMAGE_SHAPE
from wgan.errors import UserError, one_line
from wgan.models.conditional import ConditionalGenerator, label_args
from wgan.models.networks import Generator

CONFIG = constants.CONFIG_NAME  # config.json: the mixin's name, so from_pretrained finds it
WEIGHTS = constants.SAFETENSORS_SINGLE_FILE  # model.safetensors
HINT = "export a generator with `dvc repro export` (it writes models/export/)"


class HubGenerator(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="wgan",
    tags=["gan", "wgan", "mnist"],
):
    """(latents [N, latent_dim], digits [N] if conditional) -> pixels [N, 1, 28, 28] in [0, 1]."""

    def __init__(
        self,
        latent_dim: int,
        hidden: list[int],
        mean: float,
        std: float,
        img_shape: list[int] = list(IMAGE_SHAPE),  # noqa: B006 (the mixin writes defaults to config.json as-is)
        n_classes: int = 0,  # 0: the tutorial's unconditional generator
        embed_dim: int = 0,
    ) -> None:
        super().__init__()
        shape = {"latent_dim": latent_dim, "hidden": hidden, "img_shape": img_shape}
        self.generator: Generator | ConditionalGenerator = (
            ConditionalGenerator(**shape, n_classes=n_classes, embed_dim=embed_dim) if n_classes else Generator(**shape)
        )
        self.latent_dim, self.mean, self.std = self.generator.latent_dim, float(mean), float(std)
        self.conditional = bool(n_classes)
        self.eval()

    def forward(self, latents: torch.Tensor, digits: torch.Tensor | None = None) -> torch.Tensor:
        images = self.generator(latents, *label_args(digits))
        return (images * self.std + self.mean).clamp(0.0, 1.0)  # wgan.data.prepared.to_uint8, before the * 255

    @classmethod
    def wrap(cls, generator: Generator | ConditionalGenerator, norm: tuple[float, float]) -> HubGenerator:
        """The trained ``generator`` (its weights shared, not copied) with the normalization it was trained in."""
        with torch.device("meta"):  # the layers are replaced at once: allocate nothing for them
            model = cls(**hub_config(generator, norm))
        model.generator = generator.eval()
        return model

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike[str], **kwargs: Any) -> HubGenerator:  # type: ignore[override]
        """A local folder is read by ``load_folder`` (one-line errors); a Hub repo id goes to the mixin."""
        if os.path.isdir(pretrained_model_name_or_path):
            return load_folder(pretrained_model_name_or_path)[0]
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def _from_pretrained(cls, **kwargs: Any) -> HubGenerator:  # type: ignore[override]
        return super()._from_pretrained(**(kwargs | {"strict": True}))  # downloaded from the Hub: load strictly


def hub_config(generator: Generator | ConditionalGenerator, norm: tuple[float, float]) -> dict[str, Any]:
    """``config.json``: the generator's constructor arguments and the normalization that maps it to pixels."""
    return generator.init_kwargs() | {"mean": float(norm[0]), "std": float(norm[1])}


def save_folder(model: HubGenerator, folder: Path) -> None:
    """``config.json`` and ``model.safetensors`` into ``folder`` (sorted, indented JSON: the mixin's own layout)."""
    config = hub_config(model.generator, (model.mean, model.std))
    (folder / CONFIG).write_text(json.dumps(config, sort_keys=True, indent=2) + "\n", encoding="utf-8")
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    (folder / WEIGHTS).write_bytes(safetensors.torch.save(state, metadata={"format": "pt"}))  # save_model's bytes


def load_folder(folder: str | os.PathLike[str]) -> tuple[HubGenerator, tuple[float, float]]:
    """The ``HubGenerator`` of an exported folder, in eval mode, and its normalization; a bad folder is a
    ``UserError`` naming the file and the problem."""
    root = Path(folder)
    config_path, weights_path = root / CONFIG, root / WEIGHTS
    for path in (config_path, weights_path):
        if not path.is_file():
            raise UserError(f"{root} has no {path.name}, so it is not an exported generator; {HINT}")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            raise ValueError("not a JSON object")
        with torch.device("meta"):  # sizes checked before any memory is spent on them
            probe = HubGenerator(**config)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise UserError(f"{config_path} does not describe a generator ({one_line(exc)}); {HINT}") from exc
    try:
        state = safetensors.torch.load_file(weights_path)
        probe.load_state_dict(state, strict=True, assign=True)
    except (SafetensorError, RuntimeError, OSError) as exc:
        raise UserError(f"{weights_path} does not match {config_path} ({one_line(exc)}); {HINT}") from exc
    model = HubGenerator(**config)
    model.load_state_dict(state)
    return model.eval(), (model.mean, model.std)
