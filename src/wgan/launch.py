"""Start a stage as N processes through torch's own launcher (``torchrun``'s module), from inside the stage.

``dvc.yaml`` runs ``python stages/train.py`` whatever the process count, so the count comes from the
environment, like the device: ``WGAN_NPROC=2 dvc repro`` makes the stage relaunch itself as torchrun's agent
with two workers. ``WGAN_TORCHRUN`` adds torchrun's own options (for several machines: ``--nnodes``,
``--node-rank``, ``--master-addr``, ``--rdzv-*``; default ``--standalone``, one machine). A process that
torchrun started (``TORCHELASTIC_RUN_ID`` is set) never relaunches, so ``torchrun stages/train.py`` works too.

``WGAN_MAX_RESTARTS=N`` (torchrun's ``--max-restarts``): when a worker dies or a rank stops answering, the agent
stops the others and starts the whole group again, up to N times; every rank resumes from the last checkpoint.
Each restart prints one line naming the rank, how it ended and the run's last metric point (the iteration it
had reached: a SIGKILLed process cannot say where it was). A failure caused by a user error (exit code 2:
a bad input, a NaN) would fail the same way again, so it is never restarted.

The agent runs in this process: a SIGINT or SIGTERM to it reaches every worker (they checkpoint and stop), and
its exit code is the workers': 128 + the signal, 2 for a user error, and for a worker that died one line
naming its rank and 128 + the signal that killed it (or its exit code).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shlex
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any

from wgan.errors import UserError
from wgan.paths import LIVE_STATE_METRICS
from wgan.stage import EXIT_LOST_PEER, EXIT_USER_ERROR

# After a worker fails the others get SIGTERM and this long to exit before SIGKILL (torch waits 30 s): a stopped
# (SIGSTOP) rank never exits on SIGTERM, and a rank whose peer is gone can no longer save a checkpoint anyway.
# A shutdown on the user's Ctrl-C or SIGTERM keeps torch's 30 s: the workers then save a checkpoint first.
FAILED_GROUP_GRACE_S = 5

ENV_NPROC = "WGAN_NPROC"
ENV_TORCHRUN = "WGAN_TORCHRUN"
ENV_MAX_RESTARTS = "WGAN_MAX_RESTARTS"
ENV_WORKER = "TORCHELASTIC_RUN_ID"  # set by torchrun in every worker


def nproc() -> int:
    """``WGAN_NPROC``: training processes on this machine (1 when unset)."""
    raw = os.environ.get(ENV_NPROC, "").strip()
    if not raw:
        return 1
    if not raw.isdigit() or int(raw) < 1:
        raise UserError(f"{ENV_NPROC}={raw!r} is not a process count; set it to 1, 2, ... or unset it")
    return int(raw)


def max_restarts() -> int:
    """``WGAN_MAX_RESTARTS``: how many times the agent restarts a failed group (0 when unset)."""
    raw = os.environ.get(ENV_MAX_RESTARTS, "").strip()
    if raw and not raw.isdigit():
        raise UserError(f"{ENV_MAX_RESTARTS}={raw!r} is not a count; set it to 0, 1, 2, ... or unset it")
    return int(raw or 0)


def restart_count() -> int:
    """How many times torchrun's agent has restarted this worker's group (0 in a first run or without torchrun)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def restarts_left() -> int:
    """How many more times torchrun's agent will restart this worker's group after a failure (0 without torchrun)."""
    return max(int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0")) - restart_count(), 0)


def wanted() -> bool:
    """Whether this process should become torchrun's agent instead of training itself."""
    if os.environ.get(ENV_WORKER):
        return False
    return nproc() > 1 or max_restarts() > 0 or bool(os.environ.get(ENV_TORCHRUN, "").strip())


def relaunch(script: str, args: list[str] | None = None) -> int:
    """Run ``script`` as ``WGAN_NPROC`` torchrun workers here; the exit code for this process.

    A signal returns 128 + its number once every worker has stopped (rank 0 prints where it stopped).
    """
    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    options = shlex.split(os.environ.get(ENV_TORCHRUN, "")) or ["--standalone"]
    restarts = [f"--max-restarts={max_restarts()}"] if max_restarts() else []
    argv = [f"--nproc-per-node={nproc()}", *restarts, *options, script, *(args or [])]
    if os.environ.get("WGAN_DEBUG") != "1":  # the agent's own log repeats what the workers and this module say
        os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "FATAL")  # and so do Gloo's C++ errors in the workers
        for name in list(logging.root.manager.loggerDict):
            if name.startswith("torch.distributed"):
                logging.getLogger(name).setLevel(logging.CRITICAL)
    # torchrun would set 1 thread per worker (with a warning); share this machine's cores among them instead
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc())))
    said, started = io.StringIO(), time.time()
    try:
        with contextlib.redirect_stderr(said):  # argparse's usage text: only its last line is kept
            args = parse_args(argv)
    except SystemExit as exc:
        reason = said.getvalue().strip().splitlines()[-1:] or ["rejected"]
        raise UserError(f"{ENV_TORCHRUN} is not valid torchrun options ({reason[0]}); fix or unset it") from exc
    print(f"torchrun {shlex.join(argv)}", flush=True)
    try:
        with _restarting_agent(started):
            run(args)
    except SignalException as exc:  # the workers stopped (rank 0 said where and how to resume)
        return 128 + exc.sigval
    except ChildFailedError as exc:
        return _report(exc, started)
    return 0


@contextlib.contextmanager
def _restarting_agent(started: float) -> Iterator[None]:
    """Run torchrun's own launcher with ``_Agent`` as its agent class (``launch_agent`` looks the name up)."""
    from torch.distributed.launcher import api

    plain = api.LocalElasticAgent
    api.LocalElasticAgent = _agent_class(plain, started)
    try:
        yield
    finally:
        api.LocalElasticAgent = plain


def _agent_class(base: type, started: float) -> type:
    class _Agent(base):  # type: ignore[valid-type,misc]
        """torchrun's agent, plus one line per restart, no restart of user errors, and a short grace."""

        def _monitor_workers(self, worker_group: Any) -> Any:
            result = super()._monitor_workers(worker_group)
            if not result.is_failed():
                return result
            if blamed(result.failures)[1].exitcode == EXIT_USER_ERROR:
                self._remaining_restarts = 0  # a bad input or a NaN fails the same way again (torch does the same)
            elif self._remaining_restarts > 0:
                spec = worker_group.spec
                done = spec.max_restarts - self._remaining_restarts + 1
                print(
                    f"{_cause(result.failures, started)}; restarting every training process from the last checkpoint "
                    f"(restart {done} of {spec.max_restarts})",
                    file=sys.stderr,
                    flush=True,
                )
            return result

        def _start_workers(self, worker_group: Any) -> Any:
            started = super()._start_workers(worker_group)
            close = self._pcontext.close

            def close_failed_soon(death_sig: Any = None, timeout: float = 30) -> None:
                # torch closes the rest of a failed group with a bare close(); a shutdown names its signal
                close(death_sig, FAILED_GROUP_GRACE_S if death_sig is None else timeout)

            self._pcontext.close = close_failed_soon
            return started

    return _Agent


def blamed(failures: dict[int, Any]) -> tuple[int, Any]:
    """The worker that caused a failure: the agent stops the others with SIGTERM (they die of it or exit 143;
    SIGKILL after ``FAILED_GROUP_GRACE_S``), so a worker that ended otherwise is the cause: one killed by a
    signal first, then one that exited with an error, last one that lost its peers (its line names the silent
    ranks)."""

    first = min(f.timestamp for f in failures.values())  # whole seconds

    def blame(item: tuple[int, Any]) -> tuple[bool, bool, bool, int]:
        rank, failure = item
        stopped = failure.exitcode in (-signal.SIGTERM, 128 + signal.SIGTERM) or failure.timestamp > first + 2
        return stopped, failure.exitcode >= 0, failure.exitcode == EXIT_LOST_PEER, rank

    return min(failures.items(), key=blame)


def _cause(failures: dict[int, Any], started: float) -> str:
    rank, failure = blamed(failures)
    how = f"was killed by {failure.signal_name()}" if failure.exitcode < 0 else f"exited with {failure.exitcode}"
    if failure.exitcode == EXIT_LOST_PEER:
        return f"training process rank {rank} (pid {failure.pid}) lost the others (its line above names a silent rank)"
    return f"training process rank {rank} (pid {failure.pid}) {how}{last_point(started)}"


def last_point(started: float) -> str:
    """The iteration of the run's last metric point in its DVCLive metrics.json (in the run state until the run
    delivers), worded for the line naming a dead process; "" when this launch did not write the file (an older one
    is another run's). Rank 0 logs every train.log_every iterations, so a process that died without a word
    (SIGKILL) had got at least that far."""
    try:
        if LIVE_STATE_METRICS.stat().st_mtime < started:
            return ""
        step = int(json.loads(LIVE_STATE_METRICS.read_text(encoding="utf-8"))["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    return f" (the run's last metric point: iteration {step})"


def _report(exc: Exception, started: float) -> int:
    """One line for the worker that caused the failure; the exit code for this process."""
    failures = exc.failures  # type: ignore[attr-defined]  # {global rank: ProcessFailure}
    _, failure = blamed(failures)
    if failure.exitcode in (EXIT_USER_ERROR, EXIT_LOST_PEER):  # the worker printed its one line
        return failure.exitcode
    print(
        f"error: {_cause(failures, started)}; the other processes were stopped. "
        "Run the stage again to resume from its last checkpoint",
        file=sys.stderr,
        flush=True,
    )
    return 128 - failure.exitcode if failure.exitcode < 0 else failure.exitcode
