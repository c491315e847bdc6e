"""DVC stage `evaluate`: sample the trained generator and score it against real MNIST (see wgan.evaluation.evaluate).

evaluate.generator picks the generator: the end of training (final, models/generator.pt) or the kept one with the
lowest FID over training (best, models/best_generator.pt, from the quality stage). The pick_generator stage copies
that one to models/evaluated_generator.pt, which this stage reads (and depends on) alone. The same samples are scored
in the judge's feature space too (judge_fid, ...: the judge stage's models/judge.pt), which no other stage reads.
"""

import time

from wgan import paths
from wgan.classifier.classifier import Classifier, load_real_features
from wgan.config import load_section
from wgan.data.model_file import load_model
from wgan.evaluation.evaluate import evaluate
from wgan.fileio import write_json
from wgan.judge.judge import Judge
from wgan.models.conditional import ConditionalGenerator
from wgan.models.networks import Generator
from wgan.paths import rerun
from wgan.stage import run_stage


def main() -> None:
    cfg = load_section("evaluate")
    source, _ = paths.scored_generator(cfg.generator)
    path = paths.EVALUATED_GENERATOR
    generator = load_model(path, (Generator, ConditionalGenerator), rerun("pick_generator"))
    classifier = load_model(paths.CLASSIFIER, Classifier)
    real = load_real_features(paths.REAL_FEATURES)
    judge = load_model(paths.JUDGE, Judge), load_real_features(paths.JUDGE_FEATURES, rerun("judge"))
    start = time.perf_counter()
    scores, hist, accuracy = evaluate(generator, classifier, real, cfg, judge=judge)
    write_json(paths.EVAL_METRICS, scores)
    write_json(paths.CLASS_HIST, hist)
    write_json(paths.DIGIT_ACCURACY, accuracy)
    print(
        f"scored {cfg.n_samples} samples of {source} ({path}) in {time.perf_counter() - start:.1f} s; "
        f"wrote {paths.EVAL_METRICS}, {paths.CLASS_HIST}, {paths.DIGIT_ACCURACY}"
    )
    for key, value in scores.items():
        if not isinstance(value, dict):
            print(f"  {key:24s} {value:.6g}")


if __name__ == "__main__":
    run_stage(main)
