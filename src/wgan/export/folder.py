"""The export folder, ``models/export/``: everything needed to share one trained generator, written at once.

The folder is built in a temporary folder beside it and swapped in whole (``wgan.fileio.replaced_dir``), so a
failure leaves the last complete export, or none. Every file is a function of the generator, the normalization,
the metrics and the params alone (no time, no path, no random state): the same inputs give the same bytes.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from wgan.errors import UserError
from wgan.export.card import model_card
from wgan.export.hub import CONFIG, WEIGHTS, HubGenerator, hub_config, save_folder
from wgan.export.onnx import onnx_bytes
from wgan.fileio import replaced_dir
from wgan.images.generate import Layout, sample_pixels, write_grid
from wgan.models.conditional import ConditionalGenerator
from wgan.models.networks import Generator
from wgan.paths import rerun

ONNX = "generator.onnx"
SAMPLES = "samples.png"
CARD = "README.md"
PAGE = "index.html"
PAGE_SOURCE = Path(__file__).with_name(PAGE)  # the page is a static file, copied as-is
GRID = (100, 0, Layout(nrow=10, padding=2, scale=2))  # the card's grid: 100 digits of seed 0, ten per row
FILES = {  # the folder's listing, in the card
    WEIGHTS: "the weights (safetensors)",
    CONFIG: "the constructor arguments and the normalization to pixels",
    ONNX: "the generator for onnxruntime: latents (and digits) in, pixels in [0, 1] out, any batch size",
    PAGE: "a page that draws digits in the browser, from model.safetensors",
    SAMPLES: "the grid above",
    CARD: "this card",
}


def read_metrics(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The evaluate stage's metrics, which the card quotes; missing or unreadable is a ``UserError``."""
    try:
        metrics = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise UserError(f"{path} is missing; the card quotes it: {rerun('evaluate')}") from exc
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} cannot be read ({exc}); {rerun('evaluate')}") from exc
    if not isinstance(metrics, dict):
        raise UserError(f"{path} is not the evaluate stage's metrics (a JSON object); {rerun('evaluate')}")
    return metrics


def write_export(
    generator: Generator | ConditionalGenerator,
    norm: tuple[float, float],
    metrics: dict[str, Any],
    params: dict[str, dict[str, Any]],
    source: str,
    out: str | os.PathLike[str],
) -> dict[str, int]:
    """Write the folder ``out`` for ``generator`` (trained in normalization ``norm``, read from ``source``); the
    card quotes ``metrics`` and ``params``. Returns each file's size in bytes."""
    model = HubGenerator.wrap(generator, norm)
    rows = [f"| `{name}` | {what} |" for name, what in FILES.items()]
    listing = "\n".join(["| file | what |", "| --- | --- |", *rows])
    with replaced_dir(out) as tmp:
        save_folder(model, tmp)
        (tmp / ONNX).write_bytes(onnx_bytes(model))
        n, seed, layout = GRID
        write_grid(sample_pixels(generator, n, seed, norm), tmp / SAMPLES, layout)
        shutil.copyfile(PAGE_SOURCE, tmp / PAGE)
        card = model_card(hub_config(generator, norm), metrics, params, source, listing)
        (tmp / CARD).write_text(card, encoding="utf-8")
        sizes = {name: (tmp / name).stat().st_size for name in FILES}
    return sizes
