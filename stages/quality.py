"""DVC stage `quality`: score every kept generator (models/kept/) -> the quality-over-training curve, the best epoch
and its generator, against a held-out slice of the training split, never the evaluate stage's test split or
latents (see wgan.quality.quality).

models/best_generator.pt is a byte-for-byte copy of the kept file with the lowest FID, so `wgan sample --model`,
`wgan interpolate --model` and the evaluate stage (evaluate.generator: best, through the pick_generator stage's
copy) read it like models/generator.pt.
"""

import time

from wgan import paths
from wgan.classifier.classifier import Classifier, load_real_features
from wgan.config import load_section
from wgan.data.kept import list_kept
from wgan.data.model_file import load_model
from wgan.fileio import atomic_write_bytes, write_json
from wgan.models.conditional import ConditionalGenerator
from wgan.models.networks import Generator
from wgan.quality.quality import best_point, reference_size, score_over_training
from wgan.stage import run_stage


def main() -> None:
    cfg = load_section("quality")
    kept = dict(list_kept(paths.KEPT))
    # every file loaded before any scoring: a bad one fails at once (20 generators of the default run: 120 MB)
    generators = [(epoch, load_model(path, (Generator, ConditionalGenerator))) for epoch, path in kept.items()]
    classifier = load_model(paths.CLASSIFIER, Classifier)
    real = load_real_features(paths.REAL_FEATURES)
    start = time.perf_counter()
    curve = score_over_training(generators, classifier, real, cfg)
    best = best_point(curve)
    atomic_write_bytes(paths.BEST_GENERATOR, kept[best["epoch"]].read_bytes())
    write_json(paths.QUALITY_CURVE, curve)
    write_json(paths.QUALITY_METRICS, {"best_epoch": best["epoch"], "best_fid": best["fid"]})
    print(f"scored {len(curve)} kept generators, {cfg.n_samples} samples each, in {time.perf_counter() - start:.1f} s")
    print(
        f"FID against {reference_size(real.train.features.shape[0])} held-out training images, not the test split: "
        "best_fid, the lowest of noisy FIDs, is biased low and not comparable to evaluate's fid"
    )
    for point in curve:
        print(f"  epoch {point['epoch']:4d}  fid {point['fid']:8.3f}  (real: {point['fid_floor']:.3f})")
    print(
        f"best: epoch {best['epoch']} (fid {best['fid']:.4g}); "
        f"wrote {paths.BEST_GENERATOR}, {paths.QUALITY_CURVE}, {paths.QUALITY_METRICS}"
    )


if __name__ == "__main__":
    run_stage(main)
