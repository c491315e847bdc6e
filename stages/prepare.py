"""DVC stage `prepare`: IDX files -> one normalized file per split under data/prepared/."""

from pathlib import Path

from wgan.cli import run_stage
from wgan.config import load_section
from wgan.prepare import prepare_splits

RAW_DIR = Path("data/raw/MNIST/raw")
OUT_DIR = Path("data/prepared")


def main() -> None:
    cfg = load_section("prepare")
    for split, n in prepare_splits(RAW_DIR, OUT_DIR, cfg.mean, cfg.std).items():
        print(f"wrote {OUT_DIR / f'{split}.pt'}: {n} images, mean={cfg.mean} std={cfg.std}")


if __name__ == "__main__":
    run_stage(main)
