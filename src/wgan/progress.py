"""What a run tells its terminal: the progress bar, the model summary, warnings and the fix for a divergence.

Nothing here decides an output byte, so it is outside every stage's code deps and the checkpoint fingerprint:
rewording a message neither reruns training nor throws a saved checkpoint away (tests/test_stage_code.py).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, TextIO

import torch
import torchinfo
from tqdm import tqdm

from wgan.config import TrainConfig


class _LineStream:
    """A file for tqdm when stderr is not a terminal: each refresh becomes one line, no carriage returns."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress(total: int, initial: int, enabled: bool) -> tqdm:
    """A live bar in a terminal; in a log (DVC's, CI's) one line every 30 s at most, none for a short run."""
    interactive = sys.stderr.isatty()
    return tqdm(
        total=total,
        initial=initial,
        unit="it",
        disable=not enabled,
        file=sys.stderr if interactive else _LineStream(sys.stderr),
        mininterval=0.5 if interactive else 30.0,
        maxinterval=10.0 if interactive else 300.0,
        delay=0.0 if interactive else 30.0,
        dynamic_ncols=interactive,
        ascii=not interactive,
    )


def model_summary(model: torch.nn.Module, input_shape: Sequence[int], title: str) -> str:
    """torchinfo's table for a batch of 2 inputs, run in eval mode under no_grad (BatchNorm stats untouched).

    A conditional model (``wgan.models.conditional``) also gets a digit per input.
    """
    param = next(model.parameters())
    inputs: dict[str, Any] = {"input_size": (2, *input_shape)}
    if getattr(model, "CONDITIONAL", False):
        zeros = torch.zeros(2, *input_shape, device=param.device)
        inputs = {"input_data": [zeros, torch.zeros(2, dtype=torch.int64, device=param.device)]}
    stats = torchinfo.summary(
        model,
        **inputs,
        device=param.device,
        mode="eval",
        verbose=0,
        col_names=("output_size", "num_params"),
    )
    return f"{title}\n{stats}"


def divergence_fix(cfg: TrainConfig) -> str:
    """What to change in params.yaml after the losses blew up."""
    rates = f"train.lr (now {cfg.lr:g})"
    if cfg.critic_lr:
        rates += f" and train.critic_lr (now {cfg.critic_lr:g})"
    fixes = [f"lower {rates}"]
    if cfg.loss == "wgan":
        fixes.append("use train.loss: wgan-gp")
    else:
        fixes.append(f"lower train.gp_lambda (now {cfg.gp_lambda:g})")
    if cfg.precision == "bf16":
        fixes.append("use train.precision: fp32")
    return ", or ".join(fixes)


def bf16_warning(device: torch.device, precision: str) -> str | None:
    if precision == "bf16" and device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return (
            "warning: this CPU has no native bfloat16 support, so train.precision: bf16 runs several times "
            "slower than fp32 here; use fp32"
        )
    return None
