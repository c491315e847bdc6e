"""The `prepare` step: the verified IDX files in data/raw -> prepared split files (uint8 plus the normalization)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from wgan.data.idx import IdxError, decode_idx
from wgan.data.prepared import save_prepared
from wgan.download.canonical import FILES, SourceError, verify_files
from wgan.errors import UserError
from wgan.paths import rerun


def read_raw(raw_dir: Path, check_digests: bool = True) -> dict[str, np.ndarray]:
    """The four MNIST arrays (role -> uint8 array) from the download stage's files, checked, then decoded."""
    files = {}
    for role, canonical in FILES.items():
        path = Path(raw_dir) / canonical.name
        try:
            files[role] = path.read_bytes()
        except OSError as exc:
            raise UserError(f"cannot read {path}: {exc.strerror or exc}; {rerun('download')}") from exc
    try:
        if check_digests:
            verify_files(files, folder=Path(raw_dir))
        return {
            role: decode_idx(data, str(Path(raw_dir) / FILES[role].name), 3 if role.endswith("images") else 1)
            for role, data in files.items()
        }
    except (SourceError, IdxError) as exc:
        raise UserError(f"{exc}; {rerun('download')}") from exc


def prepare_splits(raw_dir: Path, out_dir: Path, mean: float, std: float, check_digests: bool = True) -> dict[str, int]:
    """Write ``train.pt`` and ``test.pt`` into ``out_dir``; return the number of images per split."""
    arrays = read_raw(raw_dir, check_digests)
    counts = {}
    for split in ("train", "test"):
        images = torch.from_numpy(arrays[f"{split}_images"].copy()).unsqueeze(1)
        labels = torch.from_numpy(arrays[f"{split}_labels"].copy())
        save_prepared(Path(out_dir) / f"{split}.pt", images, labels, mean, std)
        counts[split] = int(images.shape[0])
    return counts
