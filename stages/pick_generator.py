"""DVC stage `pick_generator`: copy the generator that evaluate.generator names to models/evaluated_generator.pt.

final: models/generator.pt (the end of training); best: models/best_generator.pt (the kept generator with the lowest
FID, from the quality stage). The copy is byte for byte, so the evaluate stage depends on exactly the generator it
scores: DVC skips evaluate when the copy's bytes did not change (a quality change with `final`, or one that keeps
the same best). Torch-free: it starts in well under a second.
"""

from wgan import paths
from wgan.config import load_section
from wgan.errors import UserError
from wgan.fileio import atomic_write_bytes
from wgan.paths import rerun
from wgan.stage import run_stage


def main() -> None:
    cfg = load_section("evaluate")
    source, writer = paths.scored_generator(cfg.generator)
    try:
        data = source.read_bytes()
    except FileNotFoundError as exc:
        raise UserError(f"generator file {source} is missing; {rerun(writer)}") from exc
    except OSError as exc:
        raise UserError(f"cannot read {source}: {exc.strerror or exc}; {rerun(writer)}") from exc
    atomic_write_bytes(paths.EVALUATED_GENERATOR, data)
    print(f"wrote {paths.EVALUATED_GENERATOR}: a copy of {source} (evaluate.generator: {cfg.generator})")


if __name__ == "__main__":
    run_stage(main)
