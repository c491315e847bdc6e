"""The four canonical MNIST files, byte for byte: their names, sizes and SHA-256 digests, and the check.

The download stage writes exactly these bytes to data/raw; the prepare stage checks them again before its IDX
reader (``wgan.data.idx``) decodes them. Download never parses IDX, so editing the reader reruns prepare only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

IDX_UBYTE = 0x08  # the IDX type code of unsigned bytes, the only one MNIST uses (in the header's third byte)


class SourceError(Exception):
    """A source could not deliver the canonical files, or these bytes are not them; the message says why."""


@dataclass(frozen=True)
class CanonicalFile:
    name: str  # the official name, uncompressed: torchvision's raw layout and MNIST_DIR use it too
    size: int  # bytes: the IDX header (8 + 4 per dimension) and one byte per pixel or label
    sha256: str  # equal to the digest of the official file from yann.lecun.com, gunzipped


FILES = {
    "train_images": CanonicalFile(
        "train-images-idx3-ubyte", 47_040_016, "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
    ),
    "train_labels": CanonicalFile(
        "train-labels-idx1-ubyte", 60_008, "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"
    ),
    "test_images": CanonicalFile(
        "t10k-images-idx3-ubyte", 7_840_016, "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"
    ),
    "test_labels": CanonicalFile(
        "t10k-labels-idx1-ubyte", 10_008, "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"
    ),
}


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify_files(
    files: Mapping[str, bytes], expected: Mapping[str, CanonicalFile] = FILES, folder: Path | None = None
) -> None:
    """Raise SourceError unless ``files`` (role -> bytes) are exactly the ``expected`` files.

    Every size is checked before any digest, so a truncated file is named as such even when another file
    differs too. The messages name each file inside ``folder`` when given.
    """

    def label(canonical: CanonicalFile) -> str:
        return str(folder / canonical.name) if folder else canonical.name

    for role, canonical in expected.items():
        size = len(files[role])
        if size != canonical.size:
            problem = "truncated" if size < canonical.size else "padded"
            raise SourceError(f"{label(canonical)} is {problem}: {size} bytes, the official file has {canonical.size}")
    for role, canonical in expected.items():
        got = sha256_hex(files[role])
        if got != canonical.sha256:
            raise SourceError(
                f"{label(canonical)} does not match the expected SHA-256 ({got[:12]}... instead of "
                f"{canonical.sha256[:12]}...): the copy is damaged or not the official MNIST"
            )
