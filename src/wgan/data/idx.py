"""The IDX reader: the bytes of one MNIST file -> a uint8 array, with its header checked against its length.

It belongs to the prepare stage (which turns data/raw into arrays): editing it reruns prepare and what follows,
never the download, which only moves verified bytes (``wgan.download.canonical``).
"""

from __future__ import annotations

import math
import struct

import numpy as np

from wgan.download.canonical import IDX_UBYTE


class IdxError(ValueError):
    """The bytes are not an IDX file of the expected kind; the message names the file and the problem."""


def decode_idx(data: bytes, name: str, ndim: int) -> np.ndarray:
    """Decode IDX bytes, checking the magic number, the number of dimensions and the length."""
    if len(data) < 4:
        raise IdxError(f"{name} is truncated ({len(data)} bytes, not even a header)")
    zero1, zero2, dtype, dims = struct.unpack(">BBBB", data[:4])
    if zero1 != 0 or zero2 != 0 or dtype != IDX_UBYTE:
        magic = int.from_bytes(data[:4], "big")
        raise IdxError(f"{name} has the wrong magic number 0x{magic:08x} (expected 0x{0x800 + ndim:08x})")
    if dims != ndim:
        raise IdxError(f"{name} has {dims} dimensions, expected {ndim}")
    header_len = 4 + 4 * dims
    if len(data) < header_len:
        raise IdxError(f"{name} is truncated (incomplete header)")
    shape = struct.unpack(f">{dims}I", data[4:header_len])
    expected = math.prod(shape) + header_len  # exact: np.prod can overflow on a damaged header
    if len(data) != expected:
        raise IdxError(f"{name} is truncated or padded: {len(data)} bytes, expected {expected} for shape {shape}")
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(shape)
