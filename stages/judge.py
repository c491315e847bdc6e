"""DVC stage `judge`: train the judge, the second feature space that only the evaluate stage reads (wgan.judge)."""

import functools
import time

from wgan import paths
from wgan.classifier.classifier import accuracy, real_features, save_real_features
from wgan.config import load_section
from wgan.data.model_file import save_model
from wgan.data.prepared import load_prepared
from wgan.fileio import write_json
from wgan.judge.judge import train_judge
from wgan.stage import run_stage


def main() -> None:
    cfg = load_section("judge")
    train, test = load_prepared(paths.TRAIN_DATA), load_prepared(paths.TEST_DATA)
    start = time.perf_counter()
    model, held_out = train_judge(train, cfg, log=functools.partial(print, flush=True))
    print(f"trained on {len(train) - len(held_out)} images in {time.perf_counter() - start:.1f} s")
    real = real_features(model, held_out, test)  # "train": the half it never saw, what the floors draw from
    scores = accuracy(model, test.images, test.labels)
    scores["held_out_accuracy"] = float((real.train.probs.argmax(1) == real.train.labels).double().mean())
    save_model(model, paths.JUDGE)
    save_real_features(real, paths.JUDGE_FEATURES)
    write_json(paths.JUDGE_METRICS, scores)
    print(
        f"test accuracy {scores['accuracy']:.4f}, test loss {scores['test_loss']:.4f}, accuracy on the "
        f"{len(held_out)} training images it never saw {scores['held_out_accuracy']:.4f}; "
        f"wrote {paths.JUDGE}, {paths.JUDGE_FEATURES}, {paths.JUDGE_METRICS}"
    )


if __name__ == "__main__":
    run_stage(main)
