"""Shared entry-point wrapper for the stage scripts: clear errors, exit codes, no tracebacks."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from wgan.errors import UserError

EXIT_USER_ERROR = 2
EXIT_LOST_PEER = 3  # a training process lost the others (wgan.training.distributed.LostPeer): worth a restart


class StageInterrupted(BaseException):
    """The stage was stopped by a signal; ``run_stage`` prints ``message`` and exits with 128 + ``signum``.

    A ``BaseException`` (like ``KeyboardInterrupt``), so ``except Exception`` blocks do not swallow it and
    the atomic writers still remove their temporary files on the way out.
    """

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum
        self.message = message


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


class StopSignals:
    """While active, SIGINT and SIGTERM only record ``signum``; a loop polls it and stops at a safe point.

    A second signal stops at once (``StageInterrupted``, without a new checkpoint) for a user who will not
    wait. Handlers can only be set from the main thread; elsewhere signals keep their usual effect.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self.previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            raise StageInterrupted(signum, f"stopped by a second {signal_name(signum)}, without a new checkpoint")
        self.signum = signum


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise StageInterrupted(signum, f"stopped by {signal_name(signum)}")


def run_stage(main: Callable[[], None], keeps_outputs: bool = False) -> None:
    """Run a stage's ``main``; a ``UserError`` becomes one line on stderr and exit code 2 (or its ``exit_code``).

    Under DVC (``DVC_STAGE`` set) the line ends with how to get back the outputs DVC deleted before it ran the
    stage, unless ``keeps_outputs`` (a stage whose outputs DVC leaves in place, like the `params` stage).

    SIGINT (Ctrl-C) and SIGTERM end the stage with one line and exit code 130 or 143; a stage may catch
    them earlier to stop at a safe point (the train stage saves a resumable checkpoint first).
    Set ``WGAN_DEBUG=1`` to get the full traceback instead.
    """
    previous = None
    if threading.current_thread() is threading.main_thread():
        # by default SIGTERM kills at once: no message, and an atomic write in progress leaves its temp file
        previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        main()
    except UserError as exc:
        if os.environ.get("WGAN_DEBUG") == "1":
            raise
        stage = os.environ.get("DVC_STAGE")  # set by `dvc repro`, which deleted the stage's outputs first
        restarted = getattr(exc, "restarted", False)  # torchrun's agent starts it again: nothing to restore yet
        restore = (
            "" if not stage or keeps_outputs or restarted else f"; `dvc checkout {stage}` restores its last outputs"
        )
        print(f"error: {exc}{restore}", file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", EXIT_USER_ERROR))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
    except StageInterrupted as exc:
        print(exc.message, file=sys.stderr)
        sys.exit(128 + exc.signum)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
