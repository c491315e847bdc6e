"""Plots that open anywhere (#25): the page `dvc plots show` writes loads no script from the network, and
`wgan plots` renders every Vega plot of dvc.yaml to a PNG with marks in it.

A copy of this project with stand-in plot data (dvclive TSVs, the evaluate and quality stages' JSON records, as they
write them) stands in for a trained one: what is tested is DVC's page and the rendering, not the numbers.
"""

from __future__ import annotations

import copy
import io
import json
import math
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO, dvc, make_repo, stage_env, wgan_command
from dvc_render.image import ImageRenderer
from dvc_render.vega import VegaRenderer
from PIL import Image

from wgan.commands.plots import file_name, render, vegalite_version
from wgan.errors import UserError

sys.path.insert(0, str(REPO / "tools"))
from offline_plots_page import CDN_SCRIPT, PAGE  # noqa: E402

TSVS = ("train/critic_loss", "train/generator_loss", "train/wasserstein", "test/wasserstein", "perf/iters_per_sec")
SOURCE = "stand_in_source"  # a field of every stand-in record: the data file it came from
MARK_PIXELS = 300  # colored pixels the marks add at scale 1: the stand-in data add 600 to 1350 (axes, legend: 104)


def plot_ids() -> list[str]:
    """The id of every plot dvc.yaml declares, top-level and per stage (an image plot's id is its path)."""
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())
    entries = list(spec.get("plots", []))
    entries += [p for stage in spec["stages"].values() for p in stage.get("plots", [])]
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries]


def vega_plot_ids() -> list[str]:
    return [i for i in plot_ids() if Path(i).suffix.lower() not in ImageRenderer.EXTENSIONS]


def image_plots() -> list[str]:
    return [i for i in plot_ids() if Path(i).suffix.lower() in ImageRenderer.EXTENSIONS]  # as DVC tells them


def write_stand_in_data(root: Path) -> None:
    """Plot data shaped like the stages' (dvclive TSVs, evaluate's records, the quality curve) and image plots."""
    for name in TSVS:
        path = root / "dvclive/plots/metrics" / f"{name}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        field = name.split("/")[1]
        source = path.relative_to(root).as_posix()  # a column the charts ignore: which file a point came from
        rows = [
            f"{step}\t{math.exp(-step / 400) + 0.1 * math.sin(step / 50):.6f}\t{source}" for step in range(50, 1050, 50)
        ]
        path.write_text(f"step\t{field}\t{SOURCE}\n" + "\n".join(rows) + "\n")
    for name in ("class_hist", "digit_accuracy"):  # digit accuracy: as a conditional generator's
        path = root / "results/eval" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        source = path.relative_to(root).as_posix()
        path.write_text(
            json.dumps([{"digit": d, "generated": 0.08 + d / 250, "real": 0.1, SOURCE: source} for d in range(10)])
        )
    curve = [  # the quality stage's points, one per kept generator
        {
            "epoch": e,
            "fid": 400 / e,
            "fid_floor": 2.0,
            "precision": 0.5 + e / 40,
            "recall": e / 20,
            "confident": 0.7,
            "class_tv": 0.3 / e,
            SOURCE: "results/quality/curve.json",
        }
        for e in range(2, 22, 2)
    ]
    (root / "results/quality").mkdir(parents=True, exist_ok=True)
    (root / "results/quality/curve.json").write_text(json.dumps(curve))
    for image in image_plots():
        (root / image).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (28, 28), 128).save(root / image)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_repo(tmp_path_factory.mktemp("plots"))
    write_stand_in_data(root)
    return root


def test_the_template_inlines_the_versions_dvc_loads() -> None:
    inlined = re.findall(r"<!-- ([a-z-]+)@([0-9.]+) \S+ from the npm registry", PAGE.read_text())
    expected = CDN_SCRIPT.findall(VegaRenderer.SCRIPTS)
    assert [name for name, _ in expected] == ["vega", "vega-lite", "vega-embed"]
    assert inlined == expected, "DVC loads other versions now: rerun `python tools/offline_plots_page.py`"
    assert 0.5e6 < PAGE.stat().st_size < 2e6
    text = PAGE.read_text()
    assert "{plot_divs}" in text and "{scripts}" not in text  # DVC's charts go in; its CDN tags stay out


@pytest.mark.slow
def test_plots_show_page_loads_no_script_from_the_network(repo: Path, tmp_path: Path) -> None:
    assert dvc(repo, "config", "plots.html_template").stdout.strip() == "plots/offline.html"
    dvc(repo, "plots", "show", "-o", str(tmp_path / "page"))
    html = (tmp_path / "page" / "index.html").read_text()
    assert not re.search(r"<script[^>]*\bsrc=", html)  # no script from anywhere: every one is inline
    assert "cdn.jsdelivr.net" not in html
    assert html.count("from the npm registry, sha256") == 3 and "Copyright (c)" in html  # the libs and notices
    assert html.count("vegaEmbed(") >= len(vega_plot_ids())  # each chart is drawn by the inlined library
    for fragment in ("Critic and generator loss", "Wasserstein estimate", *(Path(i).name for i in image_plots())):
        assert fragment in html, fragment


@pytest.mark.slow
def test_plots_show_draws_each_data_file_once_in_its_titled_charts(repo: Path, tmp_path: Path) -> None:
    """Each data file is drawn only by the charts dvc.yaml's top-level plots name for it, each with its title: a
    file also listed under a stage's `plots:` is drawn a second time with DVC's default axes and its path as title."""
    intended: dict[str, set[str]] = defaultdict(set)  # data file -> the charts dvc.yaml draws it in
    for entry in yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]:
        if isinstance(entry, dict):
            ((plot_id, definition),) = entry.items()
            for file in definition["y"]:
                intended[file].add(plot_id)
    data = json.loads(dvc(repo, "plots", "show", "--json", "-o", str(tmp_path)).stdout)["data"]
    charts = {i: r["content"] for i, renderers in data.items() for r in renderers if r["type"] == "vega"}
    titles = {
        i: chart["title"]["text"] if isinstance(chart["title"], dict) else chart["title"] for i, chart in charts.items()
    }
    assert [i for i, title in titles.items() if title == i] == []  # DVC's title for a chart dvc.yaml gives none
    drawn: dict[str, set[str]] = defaultdict(set)  # data file -> the charts `dvc plots show` draws it in
    for plot_id, chart in charts.items():
        for point in chart["data"]["values"]:
            drawn[point[SOURCE]].add(plot_id)
    assert drawn == intended


def colored_pixels(png: Path | bytes) -> int:
    """Pixels with a hue: the marks (DVC's templates color them by revision); axes, grid and text are grey."""
    image = Image.open(png if isinstance(png, Path) else io.BytesIO(png)).convert("RGB")
    rgb = np.asarray(image).astype(int)
    return int((rgb.max(-1) - rgb.min(-1) > 40).sum())


@pytest.mark.slow
def test_wgan_plots_renders_every_vega_plot_with_marks(repo: Path, tmp_path: Path) -> None:
    out = repo / "results" / "plots"
    done = subprocess.run(
        [*wgan_command(), "plots", "--scale", "1"], cwd=repo, env=stage_env(REPO), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    ids = vega_plot_ids()
    assert sorted(p.name for p in out.iterdir()) == sorted(file_name(i) for i in ids)
    for image in image_plots():
        assert f"image plot, already a file: {image}" in done.stdout
    specs = json.loads(dvc(repo, "plots", "show", "--json", "-o", str(tmp_path / "json")).stdout)["data"]
    for plot_id in ids:
        png = out / file_name(plot_id)
        with Image.open(png) as image:
            assert image.format == "PNG" and image.width >= 300 and image.height >= 300
        empty = copy.deepcopy(specs[plot_id][0]["content"])  # the same chart, axes and legend, without data
        empty["data"]["values"] = []
        render(empty, tmp_path / "empty.png", scale=1)
        assert colored_pixels(png) > colored_pixels(tmp_path / "empty.png") + MARK_PIXELS, plot_id


@pytest.mark.slow
def test_wgan_plots_errors_are_one_line(tmp_path: Path) -> None:
    def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*wgan_command(), "plots", *args], cwd=cwd, env=stage_env(REPO), capture_output=True, text=True
        )

    done = run(cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == f"error: {Path('.')} has no dvc.yaml; run this in the project, or pass --repo PATH\n"

    done = run(cwd=make_repo(tmp_path / "bare"))  # a project before its first `dvc repro`
    assert done.returncode == 2
    assert done.stderr == "error: no plot of . has data yet; run `dvc repro` first\n"


@pytest.mark.slow
def test_the_command_line_loads_neither_torch_nor_vl_convert() -> None:
    code = "import sys; from wgan.commands.main import build_parser; build_parser(); "
    code += "print(sorted({'torch', 'vl_convert'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], env=stage_env(REPO), capture_output=True, text=True)
    assert done.stdout == "[]\n", done.stderr


def test_charts_render_with_the_vega_lite_major_version_of_their_schema() -> None:
    available = ["5.8", "5.21", "6.4"]
    assert vegalite_version({"$schema": "https://vega.github.io/schema/vega-lite/v5.json"}, available) == "5.21"
    assert vegalite_version({"$schema": "https://vega.github.io/schema/vega-lite/v6.1.json"}, available) == "6.4"
    assert vegalite_version({}, available) == "6.4"


def test_rendering_fetches_nothing(tmp_path: Path) -> None:
    spec = {"data": {"url": "https://example.com/data.csv"}, "mark": "point"}
    with pytest.raises(UserError, match="cannot render x.png: .*External data url not allowed"):
        render(spec, tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []
