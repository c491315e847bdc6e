"""A torchsummary-style table of a model: each leaf layer, its output shape and parameter count.

Built with forward hooks on one dummy forward pass, run in eval mode under ``no_grad`` so that
printing a summary never changes the model (BatchNorm's running statistics stay untouched).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def model_summary(model: nn.Module, input_shape: Sequence[int], title: str = "") -> str:
    """The table for ``model`` fed a batch of 2 inputs of ``input_shape`` (batch dimension excluded)."""
    rows: list[tuple[str, str, int]] = []
    hooks = []

    def record(module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        shape = [-1, *output.shape[1:]]
        n_params = sum(p.numel() for p in module.parameters(recurse=False))
        rows.append((f"{type(module).__name__}-{len(rows) + 1}", str(shape), n_params))

    for module in model.modules():
        if not list(module.children()):
            hooks.append(module.register_forward_hook(record))
    was_training = model.training
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    try:
        model.eval()
        with torch.no_grad():
            output = model(torch.zeros(2, *input_shape, device=device))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()

    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    width = 64
    lines = [title or type(model).__name__, "-" * width, f"{'Layer (type)':<22}{'Output Shape':<28}{'Param #':>14}"]
    lines.append("=" * width)
    lines += [f"{name:<22}{shape:<28}{n:>14,}" for name, shape, n in rows]
    lines.append("=" * width)
    lines.append(f"Input: {[-1, *input_shape]}  ->  Output: {[-1, *output.shape[1:]]}")
    lines += [
        f"Total params: {total:,}",
        f"Trainable params: {trainable:,}",
        f"Non-trainable params: {total - trainable:,}",
    ]
    lines.append("-" * width)
    return "\n".join(lines)
