"""`wgan plots`: every Vega plot of the project's dvc.yaml as a PNG, drawn offline, for a headless server, a pull
request or the docs.

DVC fills each plot's Vega-Lite template with the workspace's data (``dvc plots show --json``, the documented
machine-readable form of what `dvc plots show` draws) and vl-convert renders it with its own bundled Vega, with no
browser and no network. Image plots (the sample grid, the GIFs) already are files: they are listed, not copied.
Not a DVC stage: the charts follow the plot definitions in dvc.yaml, which a stage could only track by depending
on all of dvc.yaml (rerunning on any pipeline edit), and rendering takes seconds on demand; `--out` puts them
wherever a pull request or the docs want them.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wgan.errors import UserError, one_line
from wgan.fileio import atomic_path

OUT = "results/plots"
SCALE = 2  # pixels per Vega pixel: a 300-px-wide chart becomes a 600-px PNG, sharp on high-density screens


@dataclass(frozen=True)
class Plots:
    """What `dvc plots show --json` returned: Vega-Lite specs by plot id, image plots, and plots without data."""

    specs: dict[str, dict[str, Any]]
    images: list[str]
    missing: list[str]


def file_name(plot_id: str) -> str:
    """``Wasserstein estimate`` -> ``wasserstein-estimate.png``; ``results/eval/x.json`` -> ``results-eval-x.png``."""
    stem = re.sub(r"\.(json|tsv|csv|yaml)$", "", plot_id.lower())
    return re.sub(r"[^a-z0-9]+", "-", stem).strip("-") + ".png"


def dvc_plots(repo: Path) -> Plots:
    """Every plot of ``repo``'s dvc.yaml files with the workspace's data, from the DVC CLI."""
    if not (repo / "dvc.yaml").is_file():  # elsewhere `dvc plots show --json` prints {} and succeeds
        raise UserError(f"{repo} has no dvc.yaml; run this in the project, or pass --repo PATH")
    with tempfile.TemporaryDirectory() as tmp:  # -o: where DVC copies image plots; not the repo's dvc_plots/
        done = subprocess.run(
            [sys.executable, "-m", "dvc", "plots", "show", "--json", "-o", tmp],
            cwd=repo,
            capture_output=True,
            text=True,
        )
    if done.returncode != 0:
        raise UserError(f"`dvc plots show` failed in {repo}: {one_line(Exception(done.stderr or done.stdout))}")
    data = json.loads(done.stdout).get("data", {})
    specs, images, missing = {}, [], []
    for plot_id, renderers in data.items():
        kinds = {r["type"] for r in renderers}
        if "vega" in kinds:
            specs[plot_id] = next(r["content"] for r in renderers if r["type"] == "vega")
        elif "image" in kinds:
            images.append(plot_id)
        else:  # no data file, or an empty one (digit accuracy of an unconditional generator)
            missing.append(plot_id)
    return Plots(specs, images, missing)


def vegalite_version(spec: dict[str, Any], available: list[str]) -> str:
    """The newest of vl-convert's Vega-Lite versions with the spec's major version (DVC's templates: v5), so a
    newer major's changes cannot alter a chart; the newest of all when the spec names none."""
    major = re.search(r"/v(\d+)(\.\d+)*\.json$", spec.get("$schema", ""))
    same = [v for v in available if major and v.split(".")[0] == major.group(1)]
    return max(same or available, key=lambda v: tuple(map(int, v.split("."))))


def render(spec: dict[str, Any], path: Path, scale: int = SCALE) -> None:
    """One filled Vega-Lite spec as a PNG, written atomically. No network: a spec naming a data URL is refused."""
    import vl_convert  # here: `wgan --help` must not load it

    version = vegalite_version(spec, vl_convert.get_vegalite_versions())
    try:
        png = vl_convert.vegalite_to_png(spec, vl_version=version, scale=scale, allowed_base_urls=[])
    except ValueError as err:
        raise UserError(f"cannot render {path.name}: {one_line(err)}") from err
    with atomic_path(path) as tmp:
        tmp.write_bytes(png)


def render_all(repo: Path, out: Path, scale: int = SCALE) -> tuple[list[Path], Plots]:
    """Render every Vega plot of ``repo`` into ``out``; return the PNGs written and what DVC listed."""
    plots = dvc_plots(repo)
    if not plots.specs:
        raise UserError(f"no plot of {repo} has data yet; run `dvc repro` first")
    names = {plot_id: file_name(plot_id) for plot_id in plots.specs}
    if len(set(names.values())) < len(names):
        raise UserError(f"two plots would share a PNG name: {sorted(names)}; rename one of them in dvc.yaml")
    written = []
    for plot_id, spec in plots.specs.items():
        render(spec, out / names[plot_id], scale)
        written.append(out / names[plot_id])
    return written, plots
