"""The `prepare` step: verified IDX files -> prepared split files (uint8 plus the normalization)."""

from __future__ import annotations

from pathlib import Path

import torch

from wgan.data.prepared import save_prepared
from wgan.download.mnist import SourceError, read_idx_folder, verify
from wgan.errors import UserError
from wgan.paths import rerun


def prepare_splits(raw_dir: Path, out_dir: Path, mean: float, std: float, check_digests: bool = True) -> dict[str, int]:
    """Write ``train.pt`` and ``test.pt`` into ``out_dir``; return the number of images per split."""
    try:
        arrays = read_idx_folder(Path(raw_dir))
        if check_digests:
            verify(arrays)
    except SourceError as exc:
        raise UserError(f"{exc}; {rerun('download')}") from exc
    counts = {}
    for split in ("train", "test"):
        images = torch.from_numpy(getattr(arrays, f"{split}_images").copy()).unsqueeze(1)
        labels = torch.from_numpy(getattr(arrays, f"{split}_labels").copy())
        save_prepared(Path(out_dir) / f"{split}.pt", images, labels, mean, std)
        counts[split] = int(images.shape[0])
    return counts
