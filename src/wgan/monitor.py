"""What a run tells its user: metric names, the DVCLive logger, the progress bar, the model summary, the rate.

Nothing here decides a number of the run, so this module is not part of the checkpoint fingerprint
(``wgan.checkpoint.TRAINING_CODE``): rewording a message keeps saved checkpoints resumable.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import torch
import torchinfo
from tqdm import tqdm

from wgan.config import TrainConfig

# DVCLive metric names: files are dvclive/plots/metrics/<name>.tsv, summary keys nest on "/" in metrics.json.
M_CRITIC = "train/critic_loss"  # what the critic minimizes: -wasserstein, plus the penalty under wgan-gp
M_GENERATOR = "train/generator_loss"
M_WASSERSTEIN = "train/wasserstein"
M_GP = "train/gradient_penalty"
M_HELDOUT = "test/wasserstein"
M_RATE = "perf/iters_per_sec"
# what the progress bar shows of the latest metric point
BAR_FIELDS = (("D", M_CRITIC), ("G", M_GENERATOR), ("W", M_WASSERSTEIN))


class Live:
    """The DVCLive logger plus the history of every logged point, kept so a resumed run can replay it.

    DVC deletes a stage's (non-persistent) outputs before rerunning it, and a killed run may have logged
    points after its last checkpoint, so the checkpoint, not ``dvclive/``, is the source of truth: on resume
    the folder is rewritten from the checkpoint's history (a fresh ``Live`` then the replay), which leaves
    exactly what an uninterrupted run would have logged.
    """

    def __init__(self, live_dir: Path, history: list[dict[str, float]]) -> None:
        from dvclive import Live as DVCLive  # imported late: it is slow to import and only the main process logs

        self.live = DVCLive(dir=str(live_dir), resume=False, save_dvc_exp=False, dvcyaml=False)
        self.history: list[dict[str, float]] = []
        for point in history:
            self.log(int(point["step"]), {k: v for k, v in point.items() if k != "step"}, sync=False)
        self.live.make_summary()

    def log(self, step: int, values: dict[str, float], sync: bool = True) -> None:
        self.live.step = step
        for name, value in values.items():
            self.live.log_metric(name, value)
        self.history.append({"step": float(step), **values})
        if sync:
            self.live.make_summary()

    def latest(self) -> dict[str, float]:
        """The latest value of every metric, as in dvclive/metrics.json."""
        final: dict[str, float] = {}
        for point in self.history:
            final.update({k: v for k, v in point.items() if k != "step"})
        return final

    def end(self) -> None:
        self.live.end()


class Rate:
    """Iterations per second between two metric points."""

    def __init__(self, iteration: int) -> None:
        self.iteration, self.time = iteration, time.perf_counter()

    def __call__(self, iteration: int) -> float:
        now = time.perf_counter()
        rate = (iteration - self.iteration) / max(now - self.time, 1e-9)
        self.iteration, self.time = iteration, now
        return rate


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

    A conditional model (``wgan.conditional``) also gets a digit per input.
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
    fixes = [f"lower train.lr (now {cfg.lr:g})"]
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
