"""DVC stage `prepare`: IDX files -> one normalized file per split under data/prepared/."""

from wgan import paths
from wgan.config import load_section
from wgan.data.prepare import prepare_splits
from wgan.stage import run_stage


def main() -> None:
    cfg = load_section("prepare")
    for split, n in prepare_splits(paths.RAW / "MNIST" / "raw", paths.PREPARED, cfg.mean, cfg.std).items():
        print(f"wrote {paths.PREPARED / f'{split}.pt'}: {n} images, mean={cfg.mean} std={cfg.std}")


if __name__ == "__main__":
    run_stage(main)
