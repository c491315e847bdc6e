"""Score a generator at several truncations (``wgan sample --truncation PSI``) with the evaluate stage's code.

Every row draws ``evaluate.n_samples`` samples from the latents of ``evaluate.seed``, truncated at PSI (the density
truncation of ``wgan.models.sampling``; 1: untruncated, the evaluate stage's own row, always scored first), and
prints FID (and its change against PSI 1), precision, recall, the share of confident digits, the class TV (how
far the digits' shares are from the test labels') and the smallest digit's share as a Markdown table; with the
judge's scores too (``judge_*``) when ``models/judge.pt`` is there. Each truncated row fits the dial again
(seconds; the fit is deterministic, so every row uses the same centres). Needs ``models/classifier.pt`` and
``models/real_features.pt`` (``dvc repro classifier``), and for the judge's columns ``models/judge.pt`` and
``models/judge_features.pt`` (``dvc repro judge``).

    python benchmarks/truncation.py [models/generator.pt] [--psi 1 0.6 0.4 0.3 0.2 0.1]
"""

from __future__ import annotations

import argparse
import time

from wgan import paths
from wgan.classifier.classifier import Classifier, load_real_features
from wgan.config import load_section
from wgan.data.model_file import load_model
from wgan.evaluation.evaluate import evaluate
from wgan.judge.judge import Judge
from wgan.models.conditional import ConditionalGenerator
from wgan.models.networks import Generator
from wgan.models.sampling import check_truncation

SHOWN = ("fid", "precision", "recall", "confident", "class_tv")
JUDGE = ("judge_fid", "judge_precision", "judge_recall")  # the second feature space, when models/judge.pt is there
FIDS = ("fid", "judge_fid")  # each gets a column of its change against PSI 1


def psi_value(text: str) -> float:
    try:
        value = float(text)
        check_truncation(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("generator", nargs="?", default=str(paths.GENERATOR))
    parser.add_argument("--psi", type=psi_value, nargs="+", default=[1.0, 0.6, 0.4, 0.3, 0.2, 0.1])
    args = parser.parse_args()
    cfg = load_section("evaluate")
    generator = load_model(args.generator, (Generator, ConditionalGenerator))
    classifier, real = load_model(paths.CLASSIFIER, Classifier), load_real_features(paths.REAL_FEATURES)
    judge = None
    if paths.JUDGE.is_file():
        judge = load_model(paths.JUDGE, Judge), load_real_features(paths.JUDGE_FEATURES)
    print(f"{args.generator}: evaluate.n_samples {cfg.n_samples}, evaluate.seed {cfg.seed}, judge: {judge is not None}")
    base: dict[str, float] = {}  # PSI 1's FIDs, which every row's change is measured against
    columns: tuple[str, ...] = ()
    for psi in [1.0] + [p for p in args.psi if p != 1]:
        start = time.perf_counter()
        scores = evaluate(generator, classifier, real, cfg, psi, judge)[0]
        if not base:  # the header, once the first row says whether the judge is there
            base = {k: scores[k] for k in FIDS if k in scores}
            columns = SHOWN + tuple(k for k in JUDGE if k in scores)
            changes = " | ".join(f"{k} change" for k in base)
            print(f"| truncation PSI | {changes} | " + " | ".join(columns) + " | smallest digit share |")
            print("|---" * (len(base) + len(columns) + 2) + "|")
        changes = " | ".join(f"{100 * (scores[k] / fid - 1):+.1f}%" for k, fid in base.items())
        row = " | ".join(f"{scores[k]:.4g}" for k in columns)
        smallest = min(scores["class_share"].values())
        print(f"| {psi:g} | {changes} | {row} | {smallest:.3f} |  ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
