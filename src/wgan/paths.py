"""Every stage's data inputs and outputs, relative to the repository root (DVC runs each stage there).

One home for each path: the stage scripts and the library read them from here, and
tests/test_paths.py checks that ``STAGES`` says exactly what ``dvc.yaml`` declares. Torch-free on
purpose (the gif stage imports it).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

PARAMS_OK = Path("data/params.ok")  # written by the params stage once params.yaml is valid; every stage reads it
RAW = Path("data/raw")
PREPARED = Path("data/prepared")
TRAIN_DATA = PREPARED / "train.pt"
TEST_DATA = PREPARED / "test.pt"
GENERATOR = Path("models/generator.pt")
CRITIC = Path("models/critic.pt")
SAMPLES = Path("models/samples.pt")
KEPT = Path("models/kept")  # the sampling generator every train.keep_every epochs: wgan.data.kept
BEST_GENERATOR = Path("models/best_generator.pt")  # the kept generator with the lowest FID
EVALUATED_GENERATOR = Path("models/evaluated_generator.pt")  # a copy of the one evaluate.generator names
LIVE_DIR = Path("dvclive")
LIVE_PLOTS = LIVE_DIR / "plots" / "metrics"
LIVE_METRICS = LIVE_DIR / "metrics.json"
GRIDS = Path("results/samples")
GIF = Path("results/wgan.gif")
LATENT_WALK = Path("results/latent_walk.gif")
CLASSIFIER = Path("models/classifier.pt")
REAL_FEATURES = Path("models/real_features.pt")
CLASSIFIER_METRICS = Path("results/classifier/metrics.json")
JUDGE = Path("models/judge.pt")  # the second feature space, read by the evaluate stage alone: wgan.judge
JUDGE_FEATURES = Path("models/judge_features.pt")  # its view of the test split and of the training half it never saw
JUDGE_METRICS = Path("results/judge/metrics.json")
EVAL_METRICS = Path("results/eval/metrics.json")
CLASS_HIST = Path("results/eval/class_hist.json")
DIGIT_ACCURACY = Path("results/eval/digit_accuracy.json")
QUALITY_METRICS = Path("results/quality/metrics.json")
QUALITY_CURVE = Path("results/quality/curve.json")
EXPORT = Path("models/export")  # the evaluated generator, ready to share: wgan.export.folder

# The train stage's run state: what a killed run resumes from, and nothing a later stage reads. Not a DVC output, so
# DVC neither counts it (a clone, a queued experiment's fresh workspace or a `dvc checkout` without it is up to date
# when the outputs are) nor deletes or restores it (`dvc checkout` after a killed run cannot undo the run's progress).
# .dvc/tmp/ is DVC's own scratch folder: git-ignored by `dvc init`, never tracked, never cleaned by DVC. One run's
# state at a time: the checkpoint's fingerprint (wgan.training.checkpoint) says whose it is.
TRAIN_STATE = Path(".dvc/tmp/wgan/train")
CHECKPOINT = TRAIN_STATE / "checkpoint.pt"
KEPT_STATE = TRAIN_STATE / "kept"  # the generators kept so far, copied to KEPT when the run delivers
LIVE_STATE = TRAIN_STATE / "dvclive"  # the DVCLive record so far, copied to LIVE_DIR when the run delivers
LIVE_STATE_METRICS = LIVE_STATE / LIVE_METRICS.name  # the run's latest metric point while it runs (wgan.launch)

# stage -> (data it reads, what it writes: outs, metrics and plots); code deps are listed in dvc.yaml only
STAGES: dict[str, tuple[tuple[Path, ...], tuple[Path, ...]]] = {
    "params": ((), (PARAMS_OK,)),
    "download": ((PARAMS_OK,), (RAW,)),
    "prepare": ((PARAMS_OK, RAW), (PREPARED,)),
    "train": (
        (PARAMS_OK, TRAIN_DATA, TEST_DATA),
        (GENERATOR, CRITIC, SAMPLES, KEPT, LIVE_PLOTS, LIVE_METRICS),
    ),
    "render": ((PARAMS_OK, SAMPLES), (GRIDS,)),
    "gif": ((PARAMS_OK, GRIDS), (GIF,)),
    "latent_walk": ((PARAMS_OK, GENERATOR), (LATENT_WALK,)),
    "classifier": ((PARAMS_OK, TRAIN_DATA, TEST_DATA), (CLASSIFIER, REAL_FEATURES, CLASSIFIER_METRICS)),
    "judge": ((PARAMS_OK, TRAIN_DATA, TEST_DATA), (JUDGE, JUDGE_FEATURES, JUDGE_METRICS)),
    "quality": ((PARAMS_OK, KEPT, CLASSIFIER, REAL_FEATURES), (BEST_GENERATOR, QUALITY_METRICS, QUALITY_CURVE)),
    "pick_generator": ((PARAMS_OK, GENERATOR, BEST_GENERATOR), (EVALUATED_GENERATOR,)),
    "evaluate": (
        (PARAMS_OK, EVALUATED_GENERATOR, CLASSIFIER, REAL_FEATURES, JUDGE, JUDGE_FEATURES),
        (EVAL_METRICS, CLASS_HIST, DIGIT_ACCURACY),
    ),
    "export": ((PARAMS_OK, EVALUATED_GENERATOR, EVAL_METRICS), (EXPORT,)),
}


ROOT = Path(__file__).resolve().parents[2]  # the repository: src/wgan/paths.py -> src -> root
CODE_DIRS = ("stages", "src")  # a dvc.yaml dep under these is code; any other dep is data


@cache
def stage_code(stage: str, root: Path = ROOT) -> tuple[Path, ...]:
    """The code files a stage depends on, as ``dvc.yaml`` declares them (its folders expanded to their .py files).

    ``dvc.yaml`` is the one list: the train stage's checkpoint fingerprint hashes these files, and
    tests/test_stage_code.py checks that every module a stage imports is covered.
    """
    deps = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))["stages"][stage].get("deps", [])
    files: list[Path] = []
    for dep in deps:
        path = root / (dep if isinstance(dep, str) else next(iter(dep)))
        if path.relative_to(root).parts[0] not in CODE_DIRS:
            continue
        files += sorted(p for p in path.rglob("*.py") if "__pycache__" not in p.parts) if path.is_dir() else [path]
    return tuple(files)


@cache
def tracked_sections(root: Path = ROOT) -> frozenset[str]:
    """The params.yaml sections some stage of ``dvc.yaml`` tracks (``params:``), whose every value DVC sees.

    The params stage refuses such a section when it leaves a key out (``wgan.config.check_params``): the default
    in the code would then decide outputs while no stage's deps see it.
    """
    stages = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))["stages"].values()
    return frozenset(p for stage in stages for p in stage.get("params", []) if isinstance(p, str))


def scored_generator(choice: str) -> tuple[Path, str]:
    """The generator file that ``evaluate.generator`` (final | best) names, and the stage that writes it."""
    return (BEST_GENERATOR, "quality") if choice == "best" else (GENERATOR, "train")


def rerun(stage: str) -> str:
    """The fix-it hint for a missing, stale or damaged output of ``stage``."""
    return f"rerun `dvc repro {stage}`"


@dataclass(frozen=True)
class TrainPaths:
    """The train stage's files, its run state among them; tests root them in a temporary folder."""

    train_data: Path = TRAIN_DATA
    test_data: Path = TEST_DATA
    generator: Path = GENERATOR
    critic: Path = CRITIC
    samples: Path = SAMPLES
    kept: Path = KEPT
    live_dir: Path = LIVE_DIR
    checkpoint: Path = CHECKPOINT
    kept_state: Path = KEPT_STATE
    live_state: Path = LIVE_STATE
