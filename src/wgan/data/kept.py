"""The kept generators (``train.keep_every``): the folder ``models/kept/``, one model file per kept epoch.

Written by train, read by the quality stage. ``epoch_0010.pt`` is the sampling generator after 10 epochs (the
averaged one when train.ema_decay > 0) in the model file format (``wgan.data.model_file``). A run cut short by
train.max_iterations keeps its end under the epoch it stopped in, counted from 1 like the others.
"""

from __future__ import annotations

import re
from pathlib import Path

from wgan.errors import UserError
from wgan.paths import rerun

_NAME = re.compile(r"epoch_(\d{4,})\.pt")


def kept_name(epoch: int) -> str:
    """The file name of the generator kept at ``epoch``."""
    return f"epoch_{epoch:04d}.pt"


def kept_epoch(iteration: int, per_epoch: int) -> int:
    """The epoch that the completed ``iteration`` ended or stopped in: 10 after exactly 10 epochs, 1 after 200
    iterations of a 937-iteration epoch."""
    return -(-iteration // per_epoch)


def list_kept(folder: Path) -> list[tuple[int, Path]]:
    """The kept generators in ``folder`` as (epoch, path), in epoch order; none is a ``UserError``."""
    if not folder.is_dir():
        raise UserError(f"the kept generators' folder {folder} is missing; {rerun('train')}")
    found = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.fullmatch(p.name)) and p.is_file())
    if not found:
        raise UserError(f"{folder} holds no kept generator (epoch_NNNN.pt); {rerun('train')}")
    return found
