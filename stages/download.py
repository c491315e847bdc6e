"""DVC stage `download`: real MNIST, verified, as the four IDX files under data/raw/MNIST/raw/."""

from wgan import paths
from wgan.config import load_section
from wgan.download.mnist import fetch_mnist, install_raw
from wgan.stage import run_stage


def main() -> None:
    # data.source is read but deliberately not tracked by DVC: every source yields identical bytes.
    source = load_section("data").source
    files = fetch_mnist(source)
    folder = install_raw(files, paths.RAW)
    print(f"wrote the {len(files)} MNIST files to {folder}")


if __name__ == "__main__":
    run_stage(main)
