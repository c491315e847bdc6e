"""DVC stage `classifier`: train the digit classifier whose features and predictions score the samples."""

import functools
import json
import time
from pathlib import Path

from wgan.classifier import accuracy, real_features, save_classifier, save_real_features, train_classifier
from wgan.cli import run_stage
from wgan.config import load_section
from wgan.data import load_prepared
from wgan.fileio import atomic_write_bytes

TRAIN = Path("data/prepared/train.pt")
TEST = Path("data/prepared/test.pt")
MODEL = Path("models/classifier.pt")
METRICS = Path("results/classifier/metrics.json")
REAL_FEATURES = Path("models/real_features.pt")


def main() -> None:
    cfg = load_section("classifier")
    train, test = load_prepared(TRAIN), load_prepared(TEST)
    start = time.perf_counter()
    model = train_classifier(train.images, train.labels, cfg, log=functools.partial(print, flush=True))
    print(f"trained on {len(train)} images in {time.perf_counter() - start:.1f} s")
    scores = accuracy(model, test.images, test.labels)
    save_classifier(model, MODEL)
    save_real_features(real_features(model, train, test), REAL_FEATURES)
    atomic_write_bytes(METRICS, (json.dumps(scores, indent=2) + "\n").encode())
    print(
        f"test accuracy {scores['accuracy']:.4f}, test loss {scores['test_loss']:.4f}; "
        f"wrote {MODEL}, {REAL_FEATURES}, {METRICS}"
    )


if __name__ == "__main__":
    run_stage(main)
