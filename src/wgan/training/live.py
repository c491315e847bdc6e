"""The DVCLive record of a run: the metric points, replayed from the checkpoint on resume, the rate, the device.

The loss metrics are named where they are computed (``wgan.training.step``); the two below by the loop.

The device and the precision mode are part of the experiment, not only of its speed: a CUDA run draws its
shuffle and noise from Philox where the CPU draws from MT19937, and ``precision: fp32`` runs its matmuls on TF32
tensor cores there, so the same params give another run. They are recorded as two text entries of
``dvclive/metrics.json`` (``run/device``, ``run/precision``): ``dvc exp show`` and ``dvc metrics show`` list
them beside the scores (a DVCLive param, ``dvclive/params.yaml``, is shown by neither unless ``dvc.yaml`` made the
train stage's own output a param file), and ``wgan compare`` never pools seeds across them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# DVCLive metric names: files are dvclive/plots/metrics/<name>.tsv, summary keys nest on "/" in metrics.json.
M_HELDOUT = "test/wasserstein"  # the critic's estimate on a fixed held-out batch (wgan.training.loop)
M_RATE = "perf/iters_per_sec"
M_DEVICE = "run/device"  # text, metrics.json only: "cpu", "cuda (NVIDIA H200)", "mps"
M_PRECISION = "run/precision"  # text, metrics.json only: "fp32", "tf32" (fp32 on CUDA's TF32 matmuls), "bf16"
RUN_RECORD = (M_DEVICE, M_PRECISION)


def run_record(device: torch.device, precision: str) -> dict[str, str]:
    """The device (with the GPU's name) and the precision mode its matmuls ran in, as recorded for the run."""
    import torch  # here: `wgan compare` imports this module's names without loading torch

    name = device.type
    if device.type == "cuda":
        name = f"cuda ({torch.cuda.get_device_name(device)})"
    tf32 = device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32  # set by the step on CUDA
    return {M_DEVICE: name, M_PRECISION: "bf16" if precision == "bf16" else "tf32" if tf32 else "fp32"}


class Live:
    """The DVCLive logger plus the history of every logged point, kept so a resumed run can replay it.

    DVC deletes a stage's (non-persistent) outputs before rerunning it, and a killed run may have logged
    points after its last checkpoint, so the checkpoint, not ``dvclive/``, is the source of truth: on resume
    the folder is rewritten from the checkpoint's history (a fresh ``Live`` then the replay), which leaves
    exactly what an uninterrupted run would have logged.
    """

    def __init__(self, live_dir: Path, history: list[dict[str, float]], record: dict[str, str]) -> None:
        """``record``: ``run_record``'s entries, written to metrics.json only (no curve: they are text)."""
        from dvclive import Live as DVCLive  # imported late: it is slow to import and only the main process logs

        self.live = DVCLive(dir=str(live_dir), resume=False, save_dvc_exp=False, dvcyaml=False)
        self.history: list[dict[str, float]] = []
        for point in history:
            self.log(int(point["step"]), {k: v for k, v in point.items() if k != "step"}, sync=False)
        for name, text in record.items():
            self.live.log_metric(name, text, plot=False)
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
