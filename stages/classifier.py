"""DVC stage `classifier`: train the digit classifier whose features and predictions score the samples."""

import functools
import time

from wgan import paths
from wgan.classifier.classifier import accuracy, real_features, save_real_features, train_classifier
from wgan.config import load_section
from wgan.data.model_file import save_model
from wgan.data.prepared import load_prepared
from wgan.fileio import write_json
from wgan.stage import run_stage


def main() -> None:
    cfg = load_section("classifier")
    train, test = load_prepared(paths.TRAIN_DATA), load_prepared(paths.TEST_DATA)
    start = time.perf_counter()
    model = train_classifier(train.images, train.labels, cfg, log=functools.partial(print, flush=True))
    print(f"trained on {len(train)} images in {time.perf_counter() - start:.1f} s")
    scores = accuracy(model, test.images, test.labels)
    save_model(model, paths.CLASSIFIER)
    save_real_features(real_features(model, train, test), paths.REAL_FEATURES)
    write_json(paths.CLASSIFIER_METRICS, scores)
    print(
        f"test accuracy {scores['accuracy']:.4f}, test loss {scores['test_loss']:.4f}; "
        f"wrote {paths.CLASSIFIER}, {paths.REAL_FEATURES}, {paths.CLASSIFIER_METRICS}"
    )


if __name__ == "__main__":
    run_stage(main)
