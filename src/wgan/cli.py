"""Shared entry-point wrapper for the stage scripts: clear errors, exit codes, no tracebacks."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from wgan.errors import UserError

EXIT_USER_ERROR = 2


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's ``main``; a ``UserError`` becomes one line on stderr and exit code 2.

    Set ``WGAN_DEBUG=1`` to get the full traceback instead.
    """
    try:
        main()
    except UserError as exc:
        if os.environ.get("WGAN_DEBUG") == "1":
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
