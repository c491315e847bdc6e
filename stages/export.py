"""DVC stage `export`: the evaluated generator -> models/export/, ready to share (see wgan.export.folder).

The generator is the one the evaluate stage scored (evaluate.generator: final or best): the pick_generator
stage's copy, models/evaluated_generator.pt, so the model card's metrics are its own and this stage depends on that
generator alone. The folder holds model.safetensors, config.json, the model card README.md, generator.onnx,
the sample grid and index.html, a page that draws digits in the browser. The generator's file records the
normalization that maps it to pixels, so this stage tracks no prepare params.
"""

from wgan import paths
from wgan.config import load_section, to_dict
from wgan.export.folder import read_metrics, write_export
from wgan.images.generate import load_generator
from wgan.paths import rerun
from wgan.stage import run_stage


def main() -> None:
    params = {name: to_dict(load_section(name)) for name in ("train", "evaluate")}
    source, _ = paths.scored_generator(params["evaluate"]["generator"])  # the card names the file it was copied from
    generator, norm = load_generator(paths.EVALUATED_GENERATOR, rerun("pick_generator"))
    metrics = read_metrics(paths.EVAL_METRICS)
    sizes = write_export(generator, norm, metrics, params, source.as_posix(), paths.EXPORT)
    print(f"exported {source} ({paths.EVALUATED_GENERATOR}) to {paths.EXPORT}/, {sum(sizes.values()) / 1e6:.2f} MB:")
    for name, size in sizes.items():
        print(f"  {name:20s} {size / 1e3:10.1f} kB")


if __name__ == "__main__":
    run_stage(main)
