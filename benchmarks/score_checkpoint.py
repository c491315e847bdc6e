"""Score the generators in a training checkpoint with the evaluate stage's code, one row each.

The live generator, and with ``train.ema_decay`` > 0 the average twice: with its BatchNorm statistics
recomputed for its weights (what the train stage writes, ``wgan.training.ema``) and with the live generator's
statistics copied in (the alternative). A killed or stopped run can be scored where it stands, and one
averaged run scores the plain recipe too: its live generator trains bit for bit as without averaging.
Needs ``models/classifier.pt`` and ``models/real_features.pt`` (``dvc repro classifier``).

    python benchmarks/score_checkpoint.py [.dvc/tmp/wgan/train/checkpoint.pt] [--n-samples N]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import time

import torch

from wgan import paths
from wgan.classifier.classifier import Classifier, load_real_features
from wgan.config import load_section, parse_section
from wgan.data.model_file import load_model
from wgan.evaluation.evaluate import evaluate
from wgan.fileio import torch_load_safe
from wgan.models.conditional import ConditionalGenerator
from wgan.models.networks import Generator
from wgan.training.batches import derive_seed
from wgan.training.ema import recompute_batchnorm

SHOWN = ("fid", "kid", "precision", "recall", "confident", "class_tv", "classes_covered", "nn_train_median")
SHOWN_CONDITIONAL = ("label_accuracy", "digit_fid_mean", "digit_fid_worst")


def generators(ckpt: dict) -> dict[str, Generator | ConditionalGenerator]:
    """The checkpoint's generators by name, in eval mode on the CPU."""
    cfg = parse_section("train", ckpt["fingerprint"]["config"])
    cls = ConditionalGenerator if cfg.conditional else Generator

    def build(state: dict) -> Generator | ConditionalGenerator:
        generator = cls(cfg.latent_dim, cfg.g_hidden)
        generator.load_state_dict(state)
        return generator

    out = {"live": build(ckpt["generator"])}
    average = ckpt["step"].get("ema")
    if average is not None:
        copied = build(average)
        copied.load_state_dict({k: v for k, v in ckpt["generator"].items() if "running" in k}, strict=False)
        recomputed = build(average)
        autocast = functools.partial(torch.autocast, "cpu", dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
        recompute_batchnorm(recomputed, derive_seed(cfg.seed, "ema-batchnorm"), autocast)  # as in training
        out["average, statistics recomputed"], out["average, live statistics"] = recomputed, copied
    return {name: g.eval() for name, g in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", default=str(paths.CHECKPOINT))
    parser.add_argument("--n-samples", type=int, default=0, help="evaluate.n_samples (default: params.yaml's)")
    args = parser.parse_args()
    cfg = load_section("evaluate")
    if args.n_samples:
        cfg = dataclasses.replace(cfg, n_samples=args.n_samples)
    ckpt = torch_load_safe(args.checkpoint, "checkpoint", "")
    classifier, real = load_model(paths.CLASSIFIER, Classifier), load_real_features(paths.REAL_FEATURES)
    print(f"{args.checkpoint}: iteration {ckpt['iteration']}, {ckpt['epochs_done']} epochs done")
    found = generators(ckpt)
    shown = SHOWN + (SHOWN_CONDITIONAL if isinstance(found["live"], ConditionalGenerator) else ())
    print("| generator | " + " | ".join(shown) + " |")
    print("|---" * (len(shown) + 1) + "|")
    for name, generator in found.items():
        start = time.perf_counter()
        scores = evaluate(generator, classifier, real, cfg)[0]
        print(
            f"| {name} | "
            + " | ".join(f"{scores[k]:.4g}" for k in shown)
            + f" |  ({time.perf_counter() - start:.0f} s)"
        )


if __name__ == "__main__":
    main()
