"""Score a generator at several truncations (``wgan sample --truncation PSI``) with the evaluate stage's code.

Every row draws ``evaluate.n_samples`` latents with ``evaluate.seed``, truncated at PSI (``inf``: untruncated,
the evaluate stage's own row), and prints FID, precision, recall, the share of confident digits and the class
TV (how far the digits' shares are from the test labels') as a Markdown table. Needs ``models/classifier.pt``
and ``models/real_features.pt`` (``dvc repro classifier``).

    python benchmarks/truncation.py [models/generator.pt] [--psi 0.5 0.7 1.0 1.5 inf]
"""

from __future__ import annotations

import argparse
import time

from wgan import paths
from wgan.classifier.classifier import Classifier, load_real_features
from wgan.config import load_section
from wgan.data.model_file import load_model
from wgan.evaluation.evaluate import evaluate
from wgan.models.conditional import ConditionalGenerator
from wgan.models.networks import Generator

SHOWN = ("fid", "precision", "recall", "confident", "class_tv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("generator", nargs="?", default=str(paths.GENERATOR))
    parser.add_argument("--psi", type=float, nargs="+", default=[0.5, 0.7, 1.0, 1.5, float("inf")])
    args = parser.parse_args()
    cfg = load_section("evaluate")
    generator = load_model(args.generator, (Generator, ConditionalGenerator))
    classifier, real = load_model(paths.CLASSIFIER, Classifier), load_real_features(paths.REAL_FEATURES)
    print(f"{args.generator}: evaluate.n_samples {cfg.n_samples}, evaluate.seed {cfg.seed}")
    print("| truncation | " + " | ".join(SHOWN) + " |")
    print("|---" * (len(SHOWN) + 1) + "|")
    for psi in args.psi:
        start = time.perf_counter()
        scores = evaluate(generator, classifier, real, cfg, truncation=psi)[0]
        row = " | ".join(f"{scores[k]:.4g}" for k in SHOWN)
        print(f"| {psi:g} | {row} |  ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
