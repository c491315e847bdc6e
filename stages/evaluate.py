"""DVC stage `evaluate`: sample the trained generator and score it against real MNIST (see wgan.evaluate)."""

import json
import time
from pathlib import Path

from wgan.classifier import load_classifier, load_real_features
from wgan.cli import run_stage
from wgan.config import load_section
from wgan.evaluate import evaluate
from wgan.fileio import atomic_write_bytes
from wgan.models import load_generator

GENERATOR = Path("models/generator.pt")
CLASSIFIER = Path("models/classifier.pt")
REAL_FEATURES = Path("models/real_features.pt")
METRICS = Path("results/eval/metrics.json")
CLASS_HIST = Path("results/eval/class_hist.json")


def main() -> None:
    cfg = load_section("evaluate")
    generator, classifier = load_generator(GENERATOR), load_classifier(CLASSIFIER)
    real = load_real_features(REAL_FEATURES)
    start = time.perf_counter()
    scores, hist = evaluate(generator, classifier, real, cfg)
    for path, obj in ((METRICS, scores), (CLASS_HIST, hist)):
        atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())
    print(f"scored {cfg.n_samples} samples in {time.perf_counter() - start:.1f} s; wrote {METRICS}, {CLASS_HIST}")
    for key, value in scores.items():
        if not isinstance(value, dict):
            print(f"  {key:24s} {value:.6g}")


if __name__ == "__main__":
    run_stage(main)
