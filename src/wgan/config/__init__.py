"""Typed, validated views of the sections of ``params.yaml``, on pydantic v2.

``schema`` holds one frozen dataclass per section (types, bounds, defaults, rules within a section);
``params`` reads the file, a section or the whole of it with the rules between sections; ``messages`` turns
pydantic's first error into this project's one line. The names below are what the rest of the library uses.
"""

from wgan.config.params import (
    PARAMS_FILE,
    RESTORE_HINT,
    check_params,
    defaults,
    load_section,
    parse_section,
    read_params,
    to_dict,
)
from wgan.config.schema import (
    MNIST_CLASSES,
    SECTIONS,
    ClassifierConfig,
    DataConfig,
    EvaluateConfig,
    GifConfig,
    JudgeConfig,
    LatentWalkConfig,
    PrepareConfig,
    QualityConfig,
    RenderConfig,
    ScoringConfig,
    TrainConfig,
)

__all__ = [
    "MNIST_CLASSES",
    "PARAMS_FILE",
    "RESTORE_HINT",
    "SECTIONS",
    "ClassifierConfig",
    "DataConfig",
    "EvaluateConfig",
    "GifConfig",
    "JudgeConfig",
    "LatentWalkConfig",
    "PrepareConfig",
    "QualityConfig",
    "RenderConfig",
    "ScoringConfig",
    "TrainConfig",
    "check_params",
    "defaults",
    "load_section",
    "parse_section",
    "read_params",
    "to_dict",
]
