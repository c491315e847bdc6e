"""Keeping the sampling generator over training (``train.keep_every``), for the quality stage to score each one.

The loop keeps the sampling generator (the averaged one when train.ema_decay > 0) at the end of every
``keep_every``-th epoch and at the end of the run, as ``epoch_NNNN.pt`` (``wgan.data.kept``). Keeping only reads
weights: no random stream moves and no statistic of the live models changes (the averaged generator's BatchNorm
recompute draws from its own seed), so a run's weights are the same with any keep_every.

Resume: the files are written into the run state (``wgan.paths.KEPT_STATE``, beside the checkpoint, out of DVC's
reach) and copied to the output ``models/kept/`` only when the run delivers, like the models. The checkpoint
lists the files kept up to its iteration with their SHA-256 (``RunState.kept``). A fresh run empties the folder,
so no file of an older run survives; a resumed run removes every file the checkpoint does not list (kept after
it: the resumed run writes them again, identically). A listed file that is missing or changed cannot be rebuilt,
so the checkpoint is not resumed (``kept_mismatch``): the run starts afresh, saying why.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from torch import nn

from wgan.data.kept import kept_name
from wgan.data.model_file import save_model
from wgan.fileio import file_sha256


def keep(folder: Path, generator: nn.Module, norm: tuple[float, float], epoch: int, kept: dict[str, str]) -> None:
    """Write ``generator`` (trained on data normalized with ``norm``) as the one kept at ``epoch`` and record its
    digest in ``kept`` (file name -> SHA-256)."""
    path = folder / kept_name(epoch)
    save_model(generator, path, norm)
    kept[path.name] = file_sha256(path)


def kept_mismatch(folder: Path, kept: dict[str, str]) -> str:
    """Why ``folder`` cannot give a resumed run the files ``kept`` lists ('' when every one is there, unchanged)."""
    for name, digest in kept.items():
        path = folder / name
        if not path.is_file():
            return f"its kept generator {path} is missing"
        if file_sha256(path) != digest:
            return f"its kept generator {path} has changed"
    return ""


def sync_kept(folder: Path, kept: dict[str, str], resumed: bool, log: Callable[[str], None]) -> None:
    """Make ``folder`` hold exactly the files ``kept`` lists (those of the checkpoint resumed; none for a fresh run).

    A resumed run's listed files were checked by ``kept_mismatch`` before the checkpoint was accepted.
    """
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
