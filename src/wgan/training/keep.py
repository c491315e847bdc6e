"""Keeping the sampling generator over training (``train.keep_every``), for the quality stage to score each one.

The loop keeps the sampling generator (the averaged one when train.ema_decay > 0) at the end of every
``keep_every``-th epoch and at the end of the run, as ``models/kept/epoch_NNNN.pt`` (``wgan.data.kept``).
Keeping only reads weights: no random stream moves and no statistic of the live models changes (the averaged
generator's BatchNorm recompute draws from its own seed), so a run's weights are the same with any keep_every.

Resume: DVC deletes a stage's outputs before rerunning it, so the folder is a persisted output that outlives a
kill, and the checkpoint lists the files kept up to its iteration with their SHA-256 (``RunState.kept``). A fresh
run empties the folder, so no file of an older run survives; a resumed run removes every file the checkpoint
does not list (kept after it: the resumed run writes them again, identically) and refuses to go on when a listed
file is missing or changed, which the checkpoint cannot rebuild.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from torch import nn

from wgan.data.kept import kept_name
from wgan.data.model_file import save_model
from wgan.errors import UserError
from wgan.fileio import file_sha256


def keep(folder: Path, generator: nn.Module, norm: tuple[float, float], epoch: int, kept: dict[str, str]) -> None:
    """Write ``generator`` (trained on data normalized with ``norm``) as the one kept at ``epoch`` and record its
    digest in ``kept`` (file name -> SHA-256)."""
    path = folder / kept_name(epoch)
    save_model(generator, path, norm)
    kept[path.name] = file_sha256(path)


def sync_kept(folder: Path, kept: dict[str, str], resumed: bool, checkpoint: Path, log: Callable[[str], None]) -> None:
    """Make ``folder`` hold exactly the files ``kept`` lists (those of the checkpoint resumed; none for a fresh run)."""
    if not resumed and folder.exists():
        shutil.rmtree(folder)  # a fresh run: every file there is an older run's
    for path in sorted(folder.iterdir()) if folder.is_dir() else ():
        if path.name in kept:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        log(f"removed {path}: not kept by the checkpoint's iteration (the resumed run writes it again if due)")
    for name, digest in kept.items():
        path = folder / name
        if not path.is_file() or file_sha256(path) != digest:
            raise UserError(
                f"{path}, kept by the run that {checkpoint} resumes, is missing or changed, and the checkpoint "
                f"cannot rebuild it; put it back, or delete {checkpoint} to train from scratch"
            )
