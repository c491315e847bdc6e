"""Loaded by a stage subprocess when tests put this folder on PYTHONPATH: simulates a full disk.

With WGAN_FAULT=enospc, every os.fsync fails with ENOSPC, as a write on a full disk does once
its data reaches the device. The project's atomic writers must then leave no truncated output.
"""

import errno
import os

if os.environ.get("WGAN_FAULT") == "enospc":

    def _full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    os.fsync = _full_disk
