"""Fuzzing every input file format: truncations, bit flips, foreign pickles, wrong dtypes and shapes.

Each example damages one valid file (the IDX files, plain or gzipped, a prepared split, the samples file, a model
file, the real-data features, a checkpoint) and hands it to the code that reads it. The reader must either accept it,
and then what it returns is usable by the stage (labels are digits, the renderer draws the samples), or
raise a one-line ``UserError`` naming the file: never another exception (a traceback), never a hang, never
a half-written output.
"""

from __future__ import annotations

import functools
import gzip
import io
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fuzzing import fuzz, time_limit
from hypothesis import event, given
from hypothesis import strategies as st

from wgan.classifier.classifier import REAL_FEATURES_FORMAT, Classifier, load_real_features
from wgan.config import RenderConfig
from wgan.data.model_file import load_model, load_model_and_norm, save_model
from wgan.data.prepare import prepare_splits
from wgan.data.prepared import load_prepared
from wgan.download.canonical import FILES, CanonicalFile, sha256_hex
from wgan.download.mnist import fetch_local, fetch_mnist
from wgan.download.pypi import encode_idx
from wgan.errors import UserError
from wgan.images.render import render_grids
from wgan.models.networks import Critic, Generator
from wgan.training.checkpoint import load_checkpoint

SAMPLES_FORMAT = "wgan-samples-v1"


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


# ----------------------------------------------------------------------------- damage


@st.composite
def damage(draw: st.DrawFn, data: bytes) -> bytes:
    """One or two of: truncation, bit flips, an overwritten run of bytes, appended garbage."""
    for _ in range(draw(st.integers(1, 2))):
        kind = draw(st.sampled_from(["truncate", "flip", "overwrite", "append"]))
        if kind == "truncate" or not data:
            data = data[: draw(st.integers(0, max(len(data) - 1, 0)))]
        elif kind == "flip":
            buf = bytearray(data)
            for pos, bit in draw(st.lists(st.tuples(st.integers(0, len(buf) - 1), st.integers(0, 7)), max_size=8)):
                buf[pos] ^= 1 << bit
            data = bytes(buf)
        elif kind == "overwrite":
            pos = draw(st.integers(0, len(data) - 1))
            chunk = draw(st.binary(min_size=1, max_size=64))
            data = data[:pos] + chunk + data[pos + len(chunk) :]
        else:
            data += draw(st.binary(min_size=1, max_size=64))
    event(kind)
    return data


def torch_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


DTYPES = [torch.uint8, torch.int8, torch.int64, torch.float32, torch.float64, torch.bool, torch.float16]


@st.composite
def tensors(draw: st.DrawFn, max_dims: int = 5) -> torch.Tensor:
    shape = draw(st.lists(st.integers(0, 5), max_size=max_dims))
    dtype = draw(st.sampled_from(DTYPES))
    values = torch.from_numpy(np.random.default_rng(draw(st.integers(0, 9))).integers(-3, 300, shape))
    return values.to(dtype)


foreign = st.one_of(  # what a foreign or hand-edited .pt file may hold instead of the expected payload
    st.none(),
    st.integers(),
    st.text(max_size=8),
    tensors(),
    st.lists(st.integers(), max_size=3),
    st.just(_Evil()),
    st.dictionaries(st.text(max_size=6), st.integers() | st.text(max_size=4) | tensors(), max_size=3),
)


def field_edits(payload: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """The payload with one field removed, or replaced by a wrong dtype, shape, type or value."""
    keys = sorted(payload)
    replacement = st.one_of(
        foreign,
        tensors(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([0.0, -1.0, 1e300]),
    )
    return st.one_of(
        st.sampled_from(keys).map(lambda k: {key: v for key, v in payload.items() if key != k}),
        st.tuples(st.sampled_from(keys), replacement).map(lambda kv: {**payload, kv[0]: kv[1]}),
    )


def corrupted_pt(valid_payload: dict[str, Any]) -> st.SearchStrategy[bytes]:
    """A .pt file: the valid one damaged as bytes, a foreign pickle, or the payload with a wrong field."""
    valid = torch_bytes(valid_payload)
    return st.one_of(
        damage(valid),
        foreign.map(torch_bytes),
        field_edits(valid_payload).map(torch_bytes),
    )


def check_error(exc: UserError, path: Path) -> None:
    message = str(exc)
    assert "\n" not in message, message
    assert path.name in message, message


def load_damaged(content: bytes, name: str, loader: Callable[[Path], Any]) -> Any:
    """``loader`` on ``content`` saved as ``name``: what it returns, or None after a one-line error naming it."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, name)
        path.write_bytes(content)
        with time_limit(30):
            try:
                return loader(path)
            except UserError as exc:
                check_error(exc, path)
                return None


# ----------------------------------------------------------------------------- IDX files


@functools.cache
def valid_idx() -> dict[str, bytes]:
    """Four small IDX files, role -> bytes."""
    rng = np.random.default_rng(0)
    return {
        role: encode_idx(rng.integers(0, 10, (4, 28, 28) if "images" in role else (4,), dtype=np.uint8))
        for role in FILES
    }


def damaged_folder(folder: Path, role: str, gz: bool, data: st.DataObject) -> None:
    """The valid files in ``folder``, the one for ``role`` damaged (and written gzipped, damaged after, if ``gz``)."""
    folder.mkdir()
    for name, content in valid_idx().items():
        path = folder / FILES[name].name
        if name == role:
            content = data.draw(damage(gzip.compress(content, mtime=0) if gz else content))
            path = path.with_name(path.name + ".gz") if gz else path
        path.write_bytes(content)


@fuzz(40)
@given(role=st.sampled_from(sorted(FILES)), data=st.data())
def test_idx_files_through_prepare(role: str, data: st.DataObject):
    """The IDX reader, with the digest check off so that any damage reaches it."""
    with tempfile.TemporaryDirectory() as tmp:
        raw, out = Path(tmp, "raw"), Path(tmp, "prepared")
        damaged_folder(raw, role, False, data)
        with time_limit(30):
            try:
                counts = prepare_splits(raw, out, 0.5, 0.5, check_digests=False)
            except UserError as exc:
                check_error(exc, Path(FILES[role].name))
                assert not out.exists() or not any(out.iterdir())  # nothing written
                return
        for split in ("train", "test"):  # accepted (digests off: any decodable content): whole, loadable splits
            try:
                assert len(load_prepared(out / f"{split}.pt", 0.5, 0.5)) == counts[split]
            except UserError as exc:  # e.g. a flipped label bit: the next stage refuses it in one line
                check_error(exc, out / f"{split}.pt")


@fuzz(20)
@given(role=st.sampled_from(sorted(FILES)), gz=st.booleans(), data=st.data())
def test_local_files_through_download(role: str, gz: bool, data: st.DataObject):
    """MNIST_DIR's files, plain or gzipped: refused in one line naming the file, or accepted as the exact bytes."""
    valid = valid_idx()
    expected = {name: CanonicalFile(FILES[name].name, len(b), sha256_hex(b)) for name, b in valid.items()}
    with tempfile.TemporaryDirectory() as tmp:
        damaged_folder(Path(tmp, "mnist"), role, gz, data)
        local = {"local": functools.partial(fetch_local, {"MNIST_DIR": str(Path(tmp, "mnist"))})}
        with time_limit(30):
            try:
                files = fetch_mnist("local", local, expected, log=lambda _: None)
            except UserError as exc:
                check_error(exc, Path(FILES[role].name))
                return
        assert files == valid  # only a damage that changed no byte of the content (a gzip header field) passes


# ----------------------------------------------------------------------------- prepared splits


def prepared_payload() -> dict[str, Any]:
    gen = torch.Generator().manual_seed(0)
    return {
        "format": "wgan-prepared-v1",
        "images": torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8, generator=gen),
        "labels": torch.arange(6, dtype=torch.uint8),
        "mean": 0.5,
        "std": 0.5,
    }


@fuzz(80)
@given(st.data())
def test_prepared_split(data: st.DataObject):
    split = load_damaged(data.draw(corrupted_pt(prepared_payload())), "train.pt", lambda p: load_prepared(p, 0.5, 0.5))
    if split is None:
        return
    # accepted: what train and classifier need
    assert split.images.dtype == torch.float32 and tuple(split.images.shape[1:]) == (1, 28, 28)
    assert bool(torch.isfinite(split.images).all())
    assert split.labels.dtype == torch.int64 and (len(split) == 0 or int(split.labels.min()) >= 0)
    assert len(split) == 0 or int(split.labels.max()) <= 9


# ----------------------------------------------------------------------------- samples


def samples_payload() -> dict[str, Any]:
    return {
        "format": SAMPLES_FORMAT,
        "images": torch.randint(0, 256, (2, 4, 1, 28, 28), dtype=torch.uint8),
        "epoch": torch.tensor([0, 1]),
        "iteration": torch.tensor([0, 5]),
    }


@fuzz(60)
@given(st.data())
def test_samples_file_through_render(data: st.DataObject):
    content = data.draw(corrupted_pt(samples_payload()))
    with tempfile.TemporaryDirectory() as tmp:
        path, out = Path(tmp, "samples.pt"), Path(tmp, "samples")
        path.write_bytes(content)
        out.mkdir()
        (out / "grid_old.png").write_bytes(b"previous grid")
        cfg = RenderConfig(nrow=2, n_images=4, padding=1, scale=1, caption=False)
        with time_limit(30):
            try:
                render_grids(path, out, cfg)
            except UserError as exc:
                assert "\n" not in str(exc)
                assert path.name in str(exc) or "render.n_images" in str(exc), str(exc)
                assert [p.name for p in out.iterdir()] == ["grid_old.png"]  # the old grids are kept
                return
        assert (out / "final.png").is_file()


# ----------------------------------------------------------------------------- models and features


def model_payload(kind: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "m.pt")
        torch.manual_seed(0)
        if kind == "classifier":
            save_model(Classifier(channels=(2, 4), feature_dim=8), path)
        elif kind == "generator":
            save_model(Generator(latent_dim=4, hidden=(8, 8)), path, (0.5, 0.5))  # as the train stage writes it
        else:
            save_model(Critic(hidden=(8,)), path)
        return torch.load(path, weights_only=True)


def kwargs_edits(payload: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Constructor arguments that disagree with the weights, or are absurd (huge, negative, wrong types)."""
    kwargs = payload["kwargs"]
    value = st.one_of(
        st.integers(-2, 10),
        st.sampled_from([10**6, 10**12, 2**63]),
        st.lists(st.integers(-1, 10) | st.sampled_from([10**5, 10**9]), max_size=4),
        st.text(max_size=3),
        st.none(),
    )
    return st.tuples(st.sampled_from(sorted(kwargs)), value).map(
        lambda kv: {**payload, "kwargs": {**kwargs, kv[0]: kv[1]}}
    )


def norm_edits(payload: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A generator's recorded normalization with a mean or std that is no number, not finite, or not > 0."""
    value = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-1, 1) | st.none() | st.text(max_size=3)
    return st.tuples(st.sampled_from(["mean", "std"]), value).map(
        lambda kv: {**payload, "norm": {**payload["norm"], kv[0]: kv[1]}}
    )


def load_generator_and_norm(path: Path) -> torch.nn.Module:
    """The generator; the normalization it records, when it loads, is one that maps its output to pixels."""
    generator, norm = load_model_and_norm(path, Generator)
    assert norm is None or (all(isinstance(v, float) and math.isfinite(v) for v in norm) and norm[1] > 0), norm
    return generator


LOADERS = {
    "generator": load_generator_and_norm,
    "critic": lambda path: load_model(path, Critic),
    "classifier": lambda path: load_model(path, Classifier),
}


@pytest.mark.parametrize("kind", sorted(LOADERS))
@fuzz(40)
@given(data=st.data())
def test_model_files(kind: str, data: st.DataObject):
    payload = model_payload(kind)
    edits = [corrupted_pt(payload), kwargs_edits(payload).map(torch_bytes)]
    edits += [norm_edits(payload).map(torch_bytes)] if "norm" in payload else []
    content = data.draw(st.one_of(*edits))
    model = load_damaged(content, f"{kind}.pt", LOADERS[kind])
    assert model is None or (isinstance(model, torch.nn.Module) and not model.training)
    assert not Path("PWNED").exists()


def features_payload() -> dict[str, Any]:
    def outputs(n: int) -> dict[str, torch.Tensor]:
        return {"features": torch.randn(n, 8), "probs": torch.full((n, 10), 0.1), "labels": torch.arange(n) % 10}

    return {
        "format": REAL_FEATURES_FORMAT,
        "test_shares": torch.full((10,), 0.1),
        "train": outputs(6),
        "test": outputs(4),
    }


@fuzz(40)
@given(st.data())
def test_real_features_file(data: st.DataObject):
    load_damaged(data.draw(corrupted_pt(features_payload())), "real_features.pt", load_real_features)


# ----------------------------------------------------------------------------- checkpoints

FINGERPRINT = {"config": {"lr": 5e-05}, "data": {"train": "ab", "test": "cd"}, "code": "ef", "device_type": "cpu"}


def checkpoint_payload() -> dict[str, Any]:
    return {
        "format": "wgan-checkpoint-v1",
        "fingerprint": FINGERPRINT,
        "finished": False,
        "iteration": 10,
        "generator": {"w": torch.zeros(3, 2)},
    }


@fuzz(40)
@given(st.data())
def test_checkpoint_is_resumed_only_when_it_is_whole_and_ours(data: st.DataObject):
    """A damaged checkpoint is never an error: it is ignored with a message and training starts over."""
    messages: list[str] = []
    ckpt = load_damaged(
        data.draw(corrupted_pt(checkpoint_payload())),
        "checkpoint.pt",
        lambda p: load_checkpoint(p, FINGERPRINT, messages.append),
    )
    if ckpt is None:
        assert len(messages) == 1 and "\n" not in messages[0] and "checkpoint.pt" in messages[0], messages
    else:
        assert ckpt["fingerprint"] == FINGERPRINT and not messages
