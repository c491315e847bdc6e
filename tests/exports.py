"""Stand-ins for the export tests: small generators with every weight random, and the files the stage reads.

A freshly built generator has BatchNorm statistics of 0 and 1 and zero per-digit tables, which an exporter could
drop without changing a pixel; every tensor random (variances positive) makes each of them count.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from wgan.data.model_file import save_model
from wgan.models.conditional import ConditionalGenerator
from wgan.models.networks import Generator
from wgan.paths import EVALUATED_GENERATOR

LATENT = 8
HIDDEN = (16, 32, 24)  # three blocks: two BatchNorms, so the per-layer order matters
METRICS = {"fid": 12.5, "fid_floor": 0.86, "precision": 0.71, "precision_floor": 0.8, "recall": 0.4}


def random_generator(conditional: bool, seed: int = 0) -> Generator | ConditionalGenerator:
    """A small generator in eval mode with every parameter and statistic drawn at random."""
    torch.manual_seed(seed)
    generator = ConditionalGenerator(LATENT, HIDDEN) if conditional else Generator(LATENT, HIDDEN)
    with torch.no_grad():
        for name, tensor in generator.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand_like(tensor) + 0.5 if "running_var" in name else torch.randn_like(tensor) * 0.4)
    return generator.eval()


def write_inputs(root: Path, conditional: bool, seed: int = 0, norm: tuple[float, float] = (0.5, 0.5)) -> Path:
    """A folder with what the export stage reads: params.yaml (small train section), a generator trained in
    normalization ``norm`` (its file records it) where the pick_generator stage copies it, the evaluate stage's
    metrics."""
    train = {"latent_dim": LATENT, "g_hidden": list(HIDDEN), "conditional": conditional}
    params = {"prepare": {"mean": 0.5, "std": 0.5}, "train": train, "evaluate": {}}
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    save_model(random_generator(conditional, seed), root / EVALUATED_GENERATOR, norm)
    (root / "results/eval").mkdir(parents=True, exist_ok=True)
    (root / "results/eval/metrics.json").write_text(json.dumps(METRICS))
    return root
