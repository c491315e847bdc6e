"""The model card: ``README.md`` of the exported folder, as the Hugging Face Hub reads it.

YAML front matter (huggingface_hub's ``ModelCardData``: library, tags, dataset, the evaluate stage's metrics as a
``model-index``), then the sample grid, every metric beside its real-versus-real floor, how to load the model
(Python, ONNX, the browser page), how to upload it, and the exact params that made it. Plain text from its
inputs, nothing else: the same generator, metrics and params give the same bytes.
"""

from __future__ import annotations

from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCardData

DATASET = "ylecun/mnist"  # MNIST on the Hub
FLOOR = "_floor"  # evaluate writes each metric's real-versus-real value under this suffix
HEADLINE = {  # the metrics the Hub shows, in this order, with their names (docs/quality.md defines them)
    "fid": "FID (digit-classifier features)",
    "kid": "KID (digit-classifier features)",
    "precision": "precision",
    "recall": "recall",
    "label_accuracy": "share drawn as the digit asked for",
}


def front_matter(conditional: bool, metrics: dict[str, Any], name: str) -> str:
    """The card's YAML metadata: library, tags, dataset and the headline metrics."""
    task = "image-generation" if conditional else "unconditional-image-generation"
    results = [
        EvalResult(
            task_type=task,
            dataset_type=DATASET,
            dataset_name="MNIST",
            dataset_split="test",
            metric_type=key,
            metric_name=label,
            metric_value=_round(metrics[key]),
        )
        for key, label in HEADLINE.items()
        if isinstance(metrics.get(key), int | float)
    ]
    tags = ["gan", "wgan", "mnist", "pytorch", "onnx", "safetensors"] + (["class-conditional"] if conditional else [])
    data = ModelCardData(
        library_name="wgan",
        tags=tags,
        datasets=[DATASET],
        pipeline_tag=None if conditional else task,  # the Hub has no class-conditional task
        model_name=name,
        eval_results=results or None,
    )
    return data.to_yaml() + "\n"


def metrics_table(metrics: dict[str, Any]) -> str:
    """Every number of results/eval/metrics.json beside its floor (the same measure of real images)."""
    rows = ["| metric | this generator | real images (floor) |", "| --- | --- | --- |"]
    for key, value in metrics.items():
        if key.endswith(FLOOR) or not isinstance(value, int | float):
            continue
        floor = metrics.get(key + FLOOR)
        rows.append(f"| {key} | {_round(value)} | {'' if floor is None else _round(floor)} |")
    return "\n".join(rows)


def model_card(
    config: dict[str, Any], metrics: dict[str, Any], params: dict[str, dict[str, Any]], source: str, files: str
) -> str:
    """The whole README.md: ``config`` is config.json's content, ``params`` the sections that made the model,
    ``source`` the generator file exported, ``files`` the folder's listing (a Markdown table)."""
    conditional = bool(config.get("n_classes"))
    kind = "A conditional (asked for a digit)" if conditional else "An unconditional"
    name = "wgan-mnist-conditional" if conditional else "wgan-mnist"
    latent = config["latent_dim"]
    digits = ", torch.full((16,), 7)" if conditional else ""
    asked = ", the digit asked for" if conditional else ""
    onnx_digits = ', "digits": np.full(16, 7)' if conditional else ""
    grid = "100 digits from the latents of seed 0, `wgan sample --model models/export --n 100 --nrow 10 --seed 0`" + (
        "; column i asks for digit i" if conditional else ""
    )
    return f"""---
{front_matter(conditional, metrics, name)}---

# {name}: a Wasserstein GAN generator of MNIST digits

{kind} MLP generator (latent size {latent}, hidden widths {config["hidden"]}) trained by the
wgan pipeline (a DVC project: WGAN on MNIST) and exported from `{source}`: a standard-normal latent in, a
28x28 grey image out, in pixel space [0, 1] (`round(255 * x)` is the 8-bit grey level; it was trained on pixels
normalized as `(x - {config["mean"]:g}) / {config["std"]:g}`, which `config.json` records).

![100 samples of this generator](samples.png)

{grid}.

## Metrics

The evaluate stage's scores (`results/eval/metrics.json`: {params["evaluate"]["n_samples"]} samples against the MNIST
test split, in the feature space of the pipeline's digit classifier, not Inception's: FID values are not
comparable with image-GAN papers), each beside the same measure of as many real training images:

{metrics_table(metrics)}

## Use it

```python
import torch
from wgan.export.hub import HubGenerator   # pip install the wgan project; PyTorchModelHubMixin underneath

model = HubGenerator.from_pretrained("models/export")   # this folder, or "USER/{name}" on the Hub
pixels = model(torch.randn(16, {latent}){digits})           # [16, 1, 28, 28] in [0, 1]
```

`wgan sample --model models/export --n 64 --out digits.png` draws a grid from this folder. Without the project,
`generator.onnx` runs in onnxruntime (a batch of any size):

```python
import numpy as np, onnxruntime
session = onnxruntime.InferenceSession("generator.onnx")
pixels, = session.run(None, {{"latents": np.random.randn(16, {latent}).astype(np.float32){onnx_digits}}})
```

In a browser: `python -m http.server -d models/export 8000` and open <http://localhost:8000/>; `index.html`
runs the generator in plain JavaScript from `model.safetensors` (seed, number of digits{asked}). It draws
untruncated digits: `wgan sample --truncation PSI` has the truncation dial.

## Upload

```bash
hf upload USER/{name} models/export . --repo-type model
```

## Files

{files}

## The params that made it

```yaml
{yaml.safe_dump(params, sort_keys=False).strip()}
```
"""


def _round(value: float) -> float | int:
    return value if isinstance(value, int) else float(f"{value:.5g}")
