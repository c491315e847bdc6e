"""The DVCLive record of a run: the metric points, replayed from the checkpoint on resume, and the rate.

The loss metrics are named where they are computed (``wgan.training.step``); the two below by the loop.
"""

from __future__ import annotations

import time
from pathlib import Path

# DVCLive metric names: files are dvclive/plots/metrics/<name>.tsv, summary keys nest on "/" in metrics.json.
M_HELDOUT = "test/wasserstein"  # the critic's estimate on a fixed held-out batch (wgan.training.loop)
M_RATE = "perf/iters_per_sec"


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
