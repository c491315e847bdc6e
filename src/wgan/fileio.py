"""Atomic, durable file writes and safe loading, so no run leaves a half-written output behind.

Atomic: a write goes to a temporary file beside its target, renamed over it only once complete. Durable: the
file's bytes are flushed to the device before the rename and the folder's entry after it, so a power cut at any
moment leaves the complete old or the complete new file, never an empty one or a rename that did not happen.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import glob
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wgan.errors import UserError, one_line

_TEMP_SUFFIX = ".tmp"


def _temp_prefix(target: Path) -> str:
    return f".{target.name}."


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary file lives in the same directory so the final ``os.replace`` is atomic; its bytes are fsynced
    before the rename and the directory after it, so the new file survives a power cut.
    On any error the temporary file is removed and ``path`` keeps its previous content.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=_temp_prefix(target), suffix=_TEMP_SUFFIX, dir=target.parent)
    except OSError as exc:
        raise _cannot_write(target, exc) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the output the usual permissions
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _cannot_write(target, exc) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Flush ``folder``'s entries to the device: a rename into it is on disk once this returns.

    A file system that cannot sync a folder (it says EINVAL) keeps its entries by other means; that is no error.
    """
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
    finally:
        os.close(fd)


def _fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush a closed file's bytes to the device (whoever wrote it: torch, PIL, ``shutil.copytree``)."""
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_tree(folder: Path) -> None:
    """fsync every file and folder under ``folder``."""
    for parent, _, files in os.walk(folder):
        for name in files:
            _fsync_file(os.path.join(parent, name))
        fsync_dir(parent)


def remove_stale_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files (or folders) that killed atomic writes of ``path`` left beside it; return them.

    A SIGKILL (or power loss) between ``mkstemp`` and the rename leaves ``.<name>.<random>.tmp`` behind
    (a folder, for ``replaced_dir``); ``path`` itself is intact. Call this only where no other process can be
    writing ``path`` (a DVC stage holds the lock on its outputs), or that writer's rename would fail.
    """
    target = Path(path)
    if not target.parent.is_dir():
        return []
    removed = []
    for stale in sorted(target.parent.glob(f"{glob.escape(_temp_prefix(target))}*{_TEMP_SUFFIX}")):
        try:
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale)
            else:
                stale.unlink(missing_ok=True)
        except OSError as exc:
            raise UserError(f"cannot remove {stale}: {exc.strerror or exc}; make its folder writable") from exc
        removed.append(stale)
    return removed


def _umask() -> int:
    """The process umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _cannot_write(target: Path, exc: OSError) -> UserError:
    return UserError(f"cannot write {target}: {exc.strerror or exc}; make its folder writable or free some space")


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


@contextlib.contextmanager
def replaced_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temp folder beside ``path``; swap it in for ``path`` only if the block succeeds.

    Old content (stale grids of a longer run) disappears with the old folder. The swap is one atomic
    exchange where the system has it (Linux), so a kill at any moment leaves the complete old or the
    complete new folder; elsewhere it is two renames, and a kill between them leaves the old folder
    beside ``path`` (as ``.<name>.*.tmp.old``). Every file of the new folder is fsynced before the swap and the
    parent folder after it, so a power cut keeps the swap (see the module docstring).
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(target), suffix=_TEMP_SUFFIX, dir=target.parent))
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; give it a normal folder's permissions
    except OSError as exc:
        raise _cannot_write(target, exc) from exc
    try:
        yield tmp
        _fsync_tree(tmp)
        if not (target.exists() or target.is_symlink()):
            os.replace(tmp, target)
        elif not _exchange(tmp, target):
            old = tmp.with_name(tmp.name + ".old")
            os.replace(target, old)
            try:
                os.replace(tmp, target)
            except OSError:
                os.replace(old, target)
                raise
            os.replace(old, tmp)
        fsync_dir(target.parent)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise _cannot_write(target, exc) from exc
        raise
    # tmp now holds the old content (or nothing, when there was none)
    if tmp.is_dir() and not tmp.is_symlink():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.unlink(missing_ok=True)


def copy_dir(source: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Replace the folder ``path`` by a copy of the folder ``source``, atomically and durably (``replaced_dir``)."""
    with replaced_dir(path) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically (the metrics and plot files of the stages)."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes, in hex (the checkpoint's fingerprint of the data and the kept generators)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def torch_save_atomic(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` to ``path`` atomically and durably."""
    import torch  # imported here so torch-free stages (gif) start in a second, not ten

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)


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
        raise UserError(f"{what} file {target} cannot be loaded ({one_line(exc)}); {hint}") from exc
