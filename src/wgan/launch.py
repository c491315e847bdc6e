"""Start a stage as N processes through torch's own launcher (``torchrun``'s module), from inside the stage.

``dvc.yaml`` runs ``python stages/train.py`` whatever the process count, so the count comes from the
environment, like the device: ``WGAN_NPROC=2 dvc repro`` makes the stage relaunch itself as torchrun's agent
with two workers. ``WGAN_TORCHRUN`` adds torchrun's own options (for several machines: ``--nnodes``,
``--node-rank``, ``--master-addr``, ``--rdzv-*``; default ``--standalone``, one machine). A process that
torchrun started (``TORCHELASTIC_RUN_ID`` is set) never relaunches, so ``torchrun stages/train.py`` works too.

The agent runs in this process: a SIGINT or SIGTERM to it reaches every worker (they checkpoint and stop), and
its exit code is the workers': 128 + the signal, 2 for a user error, and for a worker that died one line
naming its rank and 128 + the signal that killed it (or its exit code).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shlex
import signal
import sys
from typing import Any

from wgan.errors import UserError

ENV_NPROC = "WGAN_NPROC"
ENV_TORCHRUN = "WGAN_TORCHRUN"
ENV_WORKER = "TORCHELASTIC_RUN_ID"  # set by torchrun in every worker


def nproc() -> int:
    """``WGAN_NPROC``: training processes on this machine (1 when unset)."""
    raw = os.environ.get(ENV_NPROC, "").strip()
    if not raw:
        return 1
    if not raw.isdigit() or int(raw) < 1:
        raise UserError(f"{ENV_NPROC}={raw!r} is not a process count; set it to 1, 2, ... or unset it")
    return int(raw)


def wanted() -> bool:
    """Whether this process should become torchrun's agent instead of training itself."""
    if os.environ.get(ENV_WORKER):
        return False
    return nproc() > 1 or bool(os.environ.get(ENV_TORCHRUN, "").strip())


def relaunch(script: str, args: list[str] | None = None) -> int:
    """Run ``script`` as ``WGAN_NPROC`` torchrun workers here; the exit code for this process.

    A signal returns 128 + its number once every worker has stopped (rank 0 prints where it stopped).
    """
    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    options = shlex.split(os.environ.get(ENV_TORCHRUN, "")) or ["--standalone"]
    argv = [f"--nproc-per-node={nproc()}", *options, script, *(args or [])]
    if os.environ.get("WGAN_DEBUG") != "1":  # the agent's own log repeats what the workers and this module say
        for name in list(logging.root.manager.loggerDict):
            if name.startswith("torch.distributed"):
                logging.getLogger(name).setLevel(logging.CRITICAL)
    # torchrun would set 1 thread per worker (with a warning); share this machine's cores among them instead
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc())))
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):  # argparse's usage text: only its last line is kept
            args = parse_args(argv)
    except SystemExit as exc:
        reason = said.getvalue().strip().splitlines()[-1:] or ["rejected"]
        raise UserError(f"{ENV_TORCHRUN} is not valid torchrun options ({reason[0]}); fix or unset it") from exc
    print(f"torchrun {shlex.join(argv)}", flush=True)
    try:
        run(args)
    except SignalException as exc:  # the workers stopped (rank 0 said where and how to resume)
        return 128 + exc.sigval
    except ChildFailedError as exc:
        return _report(exc)
    return 0


def _report(exc: Exception) -> int:
    """One line for the worker that caused the failure; the agent stops the others with SIGTERM, so a worker
    that ended otherwise is the cause, one killed by another signal first."""
    failures = exc.failures  # type: ignore[attr-defined]  # {global rank: ProcessFailure}

    def blame(item: tuple[int, Any]) -> tuple[bool, bool, int]:
        rank, failure = item
        return failure.exitcode == -signal.SIGTERM, failure.exitcode >= 0, rank

    rank, failure = min(failures.items(), key=blame)
    if failure.exitcode == 2:  # a user error: the worker printed its one line
        return 2
    how = f"was killed by {failure.signal_name()}" if failure.exitcode < 0 else f"exited with {failure.exitcode}"
    print(
        f"error: training process rank {rank} (pid {failure.pid}) {how}; the other processes were stopped. "
        "Run the stage again to resume from its last checkpoint",
        file=sys.stderr,
        flush=True,
    )
    return 128 - failure.exitcode if failure.exitcode < 0 else failure.exitcode
