"""Is the judge a judge? Linear CKA between its features and the classifier's, beside what near copies give.

Trains, with params.yaml's classifier and judge sections, the classifier and the judge at their seed and at the
next one, and prints, on the test split: each model's accuracy, and linear CKA (``wgan.judge.cka``) of

- classifier vs judge: the two feature spaces the evaluate stage reports;
- classifier vs the classifier of another seed: a near copy (same network, same images);
- judge vs the judge of another seed: the same for the judge;
- the raw pixels vs each: what any two representations of the same digits share.

Each pair twice: on the features, and "within digits", on the features less the mean of their digit (the test
labels). Any two accurate digit classifiers share the ten clusters, which dominate linear CKA; the variation within
a digit is what FID between good generators mostly measures. The judge is independent in the sense that matters
when classifier vs judge is clearly below classifier vs classifier-with-another-seed.
docs/quality.md#the-judge-a-held-out-feature-space records a run.

    OMP_NUM_THREADS=1 python benchmarks/judge_independence.py [--data data/prepared] [--epochs N]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from wgan.classifier.classifier import accuracy, run_classifier, train_classifier
from wgan.config import load_section
from wgan.data.prepared import load_prepared
from wgan.judge.cka import linear_cka
from wgan.judge.judge import train_judge


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/prepared"), help="train.pt and test.pt (prepare)")
    parser.add_argument("--epochs", type=int, default=0, help="both models' epochs (0: params.yaml's)")
    args = parser.parse_args()
    train, test = load_prepared(args.data / "train.pt"), load_prepared(args.data / "test.pt")
    base = {"classifier": load_section("classifier"), "judge": load_section("judge")}
    if args.epochs:
        base = {name: dataclasses.replace(cfg, epochs=args.epochs) for name, cfg in base.items()}
    feats: dict[str, torch.Tensor] = {"pixels": test.images.flatten(1)}
    print("| model | seed | test accuracy | training s |\n|---|---|---|---|")
    for name, cfg in base.items():
        for seed in (cfg.seed, cfg.seed + 1):
            start = time.perf_counter()
            run = dataclasses.replace(cfg, seed=seed)
            if name == "classifier":
                model = train_classifier(train.images, train.labels, run)
            else:
                model = train_judge(train, run)[0]
            seconds = time.perf_counter() - start
            key = name if seed == cfg.seed else f"{name} (seed {seed})"
            feats[key] = run_classifier(model, test.images).features
            score = accuracy(model, test.images, test.labels)["accuracy"]
            print(f"| {name} | {seed} | {score:.4f} | {seconds:.0f} |", flush=True)
    seed1 = {name: f"{name} (seed {cfg.seed + 1})" for name, cfg in base.items()}
    pairs = [
        ("classifier", "judge"),
        (seed1["classifier"], seed1["judge"]),
        ("classifier", seed1["classifier"]),
        ("judge", seed1["judge"]),
        ("pixels", "classifier"),
        ("pixels", "judge"),
    ]
    within = {name: less_digit_means(f, test.labels) for name, f in feats.items()}
    print(f"\nlinear CKA on the {len(test)} test images:")
    print("| features | features | CKA | CKA within digits |\n|---|---|---|---|")
    for a, b in pairs:
        print(f"| {a} | {b} | {linear_cka(feats[a], feats[b]):.3f} | {linear_cka(within[a], within[b]):.3f} |")


def less_digit_means(feats: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``feats`` less the mean of the features of their digit: the variation within each digit."""
    means = torch.zeros(int(labels.max()) + 1, feats.shape[1]).index_add_(0, labels, feats)
    return feats - (means / torch.bincount(labels)[:, None])[labels]


if __name__ == "__main__":
    main()
