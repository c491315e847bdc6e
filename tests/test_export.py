"""The export folder in-process: from_pretrained, its refusals, the model card, the ONNX file, identical bytes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
import yaml
from exports import LATENT, METRICS, random_generator
from huggingface_hub import ModelCard

from wgan.data.model_file import load_model, save_model
from wgan.data.prepared import to_uint8
from wgan.errors import UserError
from wgan.export import folder as export_folder
from wgan.export.card import model_card
from wgan.export.hub import CONFIG, WEIGHTS, HubGenerator, hub_config, save_folder
from wgan.export.onnx import onnx_bytes
from wgan.models.conditional import ConditionalGenerator
from wgan.models.networks import Generator
from wgan.models.sampling import balanced_digits

NORM = (0.45, 0.6)  # not the default 0.5 / 0.5: a normalization dropped on the way shows
PARAMS = {"train": {"latent_dim": LATENT}, "evaluate": {"n_samples": 9}}


def _inputs(generator: Generator | ConditionalGenerator, n: int, seed: int = 1) -> tuple[torch.Tensor, ...]:
    z = torch.randn(n, generator.latent_dim, generator=torch.Generator().manual_seed(seed))
    return (z, balanced_digits(n)) if isinstance(generator, ConditionalGenerator) else (z,)


def _grey(generator: Generator | ConditionalGenerator, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The 8-bit pixels `wgan sample` writes for these inputs."""
    with torch.no_grad():
        return to_uint8(generator(*inputs), *NORM)


@pytest.fixture(params=[False, True], ids=["unconditional", "conditional"])
def generator(request: pytest.FixtureRequest) -> Generator | ConditionalGenerator:
    return random_generator(request.param)


@pytest.fixture
def saved(generator: Generator | ConditionalGenerator, tmp_path: Path) -> Path:
    save_folder(HubGenerator.wrap(generator, NORM), tmp_path)
    return tmp_path


def test_from_pretrained_gives_the_generators_pixels(generator, saved: Path) -> None:
    model = HubGenerator.from_pretrained(saved)
    inputs = _inputs(generator, 32)
    with torch.no_grad():
        pixels = model(*inputs)
    assert model.conditional == isinstance(generator, ConditionalGenerator)
    assert float(pixels.min()) >= 0.0 and float(pixels.max()) <= 1.0
    assert torch.equal((pixels * 255).round().to(torch.uint8), _grey(generator, inputs))
    assert json.loads((saved / CONFIG).read_text()) == hub_config(generator, NORM)


def _edit_config(folder: Path, **changes: object) -> None:
    config = json.loads((folder / CONFIG).read_text())
    (folder / CONFIG).write_text(json.dumps(config | changes))


BAD_FOLDERS = {
    "other-widths": (lambda f: _edit_config(f, hidden=[16, 32, 25]), "does not match"),
    "other-latent-size": (lambda f: _edit_config(f, latent_dim=LATENT + 1), "does not match"),
    "conditional-flag-flipped": (lambda f: _flip_conditional(f), "does not match"),
    "unknown-key": (lambda f: _edit_config(f, depth=3), "does not describe a generator"),
    "config-not-json": (lambda f: (f / CONFIG).write_text("{hidden: [16"), "does not describe a generator"),
    "config-missing": (lambda f: (f / CONFIG).unlink(), "has no config.json"),
    "weights-missing": (lambda f: (f / WEIGHTS).unlink(), "has no model.safetensors"),
    "weights-truncated": (lambda f: (f / WEIGHTS).write_bytes((f / WEIGHTS).read_bytes()[:500]), "does not match"),
    "weights-foreign": (lambda f: (f / WEIGHTS).write_bytes(b"\x00" * 64), "does not match"),
}


def _flip_conditional(folder: Path) -> None:
    config = json.loads((folder / CONFIG).read_text())
    if config.get("n_classes"):
        del config["n_classes"], config["embed_dim"]
    else:
        config |= {"n_classes": 10, "embed_dim": 10}
    (folder / CONFIG).write_text(json.dumps(config))


@pytest.mark.parametrize("case", list(BAD_FOLDERS))
def test_a_folder_that_is_not_a_matching_export_is_one_line(case: str, saved: Path) -> None:
    damage, expect = BAD_FOLDERS[case]
    damage(saved)
    with pytest.raises(UserError) as err:
        HubGenerator.from_pretrained(saved)
    message = str(err.value)
    assert expect in message and "\n" not in message, message
    assert "dvc repro export" in message  # the fix


def test_the_card_is_a_hub_model_card_with_the_metrics_and_params(generator) -> None:
    conditional = isinstance(generator, ConditionalGenerator)
    text = model_card(hub_config(generator, NORM), METRICS, PARAMS, "models/generator.pt", "| file |")
    card = ModelCard(text)
    assert card.data.library_name == "wgan" and card.data.datasets == ["ylecun/mnist"]
    shown = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert shown == {key: METRICS[key] for key in ("fid", "precision", "recall")}
    assert "| fid | 12.5 | 0.86 |" in text and "| recall | 0.4 |  |" in text
    assert yaml.safe_load(text.split("```yaml\n")[1].split("```")[0]) == PARAMS
    assert ("torch.full((16,), 7)" in text) == conditional  # the example asks a conditional model for a digit
    assert "hf upload" in text and "from_pretrained" in text and "samples.png" in text


def test_a_failed_export_leaves_the_last_one(generator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "export"
    out.mkdir()
    (out / "README.md").write_text("the last export\n")

    def fail(model: HubGenerator) -> bytes:
        raise RuntimeError("the exporter failed")

    monkeypatch.setattr(export_folder, "onnx_bytes", fail)
    with pytest.raises(RuntimeError):
        export_folder.write_export(generator, NORM, METRICS, PARAMS, "models/generator.pt", out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no temporary folder left beside it
    assert [p.name for p in out.iterdir()] == ["README.md"] and (out / "README.md").read_text() == "the last export\n"


@pytest.mark.slow  # the first ONNX export in a process takes about a second
def test_onnx_runs_the_generator_within_1e_4_of_torch(generator) -> None:
    model = HubGenerator.wrap(generator, NORM)
    session = onnxruntime.InferenceSession(onnx_bytes(model))
    assert [i.name for i in session.get_inputs()] == (["latents", "digits"] if model.conditional else ["latents"])
    for n in (64, 3):  # the batch is dynamic
        inputs = _inputs(generator, n, seed=n)
        (pixels,) = session.run(None, {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs, strict=True)})
        with torch.no_grad():
            want = model(*inputs).numpy()
        assert pixels.shape == (n, 1, 28, 28)
        np.testing.assert_allclose(pixels, want, rtol=0, atol=1e-4)  # pixel space [0, 1], like HubGenerator's


@pytest.mark.slow  # two ONNX exports
def test_the_same_generator_gives_the_same_bytes(generator, tmp_path: Path) -> None:
    """Once from the generator in memory, once from its file loaded again: every file identical; another
    generator changes the weights, the ONNX file and the grid."""
    save_model(generator, tmp_path / "generator.pt")
    reloaded = load_model(tmp_path / "generator.pt", (Generator, ConditionalGenerator))
    other = random_generator(isinstance(generator, ConditionalGenerator), seed=1)
    folders = {}
    for name, model in (("a", generator), ("b", reloaded), ("c", other)):
        export_folder.write_export(model, NORM, METRICS, PARAMS, "models/generator.pt", tmp_path / name)
        folders[name] = {p.name: p.read_bytes() for p in (tmp_path / name).iterdir()}
    assert set(folders["a"]) == set(export_folder.FILES)
    assert folders["a"] == folders["b"]
    changed = {name for name in folders["a"] if folders["a"][name] != folders["c"][name]}
    assert changed == {WEIGHTS, export_folder.ONNX, export_folder.SAMPLES}
