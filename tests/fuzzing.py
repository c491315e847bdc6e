"""Shared settings for the property-based fuzz tests (hypothesis).

`make test` runs a fixed, derandomized set of examples per test (a few hundred in all, seconds).
`FUZZ_EXAMPLES=5000 pytest tests/test_fuzz_params.py tests/test_fuzz_files.py` runs that many random examples
per test instead, with a fresh seed each run.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

from hypothesis import HealthCheck, settings

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "0"))


def fuzz(examples: int) -> settings:
    """``examples`` in CI (the same ones every run), ``FUZZ_EXAMPLES`` random ones when it is set."""
    return settings(
        max_examples=FUZZ_EXAMPLES or examples,
        derandomize=not FUZZ_EXAMPLES,
        deadline=None,  # a slow example on a busy machine is not a failure; a hang still is (pytest's timeout)
        database=None,  # nothing written into the checkout
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
        print_blob=True,
    )


class Hang(Exception):
    """An example ran past its time limit."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Fail an example that runs longer than ``seconds`` (SIGALRM: main thread, POSIX)."""

    def expired(signum: int, frame: object) -> None:
        raise Hang(f"example still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
