"""Atomic file writes and safe loading, so no run leaves a half-written output behind."""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wgan.errors import UserError, first_line

_TEMP_SUFFIX = ".tmp"


def _temp_prefix(target: Path) -> str:
    return f".{target.name}."


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary file lives in the same directory so the final ``os.replace`` is atomic.
    On any error the temporary file is removed and ``path`` keeps its previous content.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=_temp_prefix(target), suffix=_TEMP_SUFFIX, dir=target.parent)
    except OSError as exc:
        raise UserError(
            f"cannot write {target}: {exc.strerror or exc}; make its folder writable or free some space"
        ) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the output the usual permissions
    try:
        yield tmp
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(
            f"cannot write {target}: {exc.strerror or exc}; make its folder writable or free some space"
        ) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files that killed ``atomic_path`` writes of ``path`` left beside it; return them.

    A SIGKILL (or power loss) between ``mkstemp`` and the rename leaves ``.<name>.<random>.tmp`` behind;
    ``path`` itself is intact. Call this only where no other process can be writing ``path`` (a DVC stage
    holds the lock on its outputs), or that writer's rename would fail.
    """
    target = Path(path)
    if not target.parent.is_dir():
        return []
    removed = []
    for stale in sorted(target.parent.glob(f"{glob.escape(_temp_prefix(target))}*{_TEMP_SUFFIX}")):
        try:
            stale.unlink(missing_ok=True)
        except OSError as exc:
            raise UserError(f"cannot remove {stale}: {exc.strerror or exc}; make its folder writable") from exc
        removed.append(stale)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (fsynced before the rename)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def torch_save_atomic(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` to a temp file, fsync, then rename onto ``path``."""
    import torch  # imported here so torch-free stages (gif) start in a second, not ten

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())


def torch_load_safe(path: str | os.PathLike[str], what: str, hint: str) -> Any:
    """Load a ``.pt`` file with ``weights_only=True``; any failure is a ``UserError``.

    ``what`` names the file's role (e.g. "generator"), ``hint`` says how to regenerate it.
    """
    import torch

    target = Path(path)
    if not target.is_file():
        raise UserError(f"{what} file {target} is missing; {hint}")
    try:
        return torch.load(target, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/foreign files
        raise UserError(f"{what} file {target} cannot be loaded ({first_line(exc)}); {hint}") from exc
