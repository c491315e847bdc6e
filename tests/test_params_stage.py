"""The `params` stage: every section validated before any stage whose outputs DVC would delete.

The real DVC CLI runs (a bad value through `dvc repro` and `dvc exp run -S` on a finished run) are in
test_pipeline_full.py, which already holds a finished run; these are the fast checks.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import REPO, edit_params, run_stage_script

from wgan import paths
from wgan.config import SECTIONS, check_params
from wgan.errors import UserError

PIPELINE = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
MARKER = "data/params.ok"


def test_every_stage_waits_for_the_params_stage():
    gate = PIPELINE["params"]
    assert [o if isinstance(o, str) else next(iter(o)) for o in gate["outs"]] == [MARKER]
    for name, stage in PIPELINE.items():
        if name != "params":
            assert MARKER in stage["deps"], name


def test_params_stage_tracks_every_section_a_stage_tracks_and_nothing_else():
    tracked = {p for name, stage in PIPELINE.items() if name != "params" for p in stage.get("params", [])}
    # data.source is read by download but not tracked: every source gives the same bytes, so it reruns nothing
    assert set(PIPELINE["params"]["params"]) == tracked == set(SECTIONS) - {"data"} == paths.tracked_sections()
    assert {"stages/params.py", "src/wgan/config"} <= set(PIPELINE["params"]["deps"])


@pytest.mark.slow
def test_valid_params_write_the_same_marker_whatever_their_values(tmp_path: Path):
    edit_params(tmp_path, REPO)
    assert run_stage_script("params", tmp_path).returncode == 0
    first = (tmp_path / MARKER).read_bytes()
    edit_params(tmp_path, REPO, train={"lr": 1e-4, "n_critic": 3}, gif={"stride": 1})
    assert run_stage_script("params", tmp_path).returncode == 0
    assert (tmp_path / MARKER).read_bytes() == first  # so no downstream stage sees a changed dependency


@pytest.mark.slow
def test_bad_params_fail_in_one_line_and_leave_the_marker(tmp_path: Path):
    edit_params(tmp_path, REPO)
    run_stage_script("params", tmp_path)
    before = (tmp_path / MARKER).read_bytes()
    edit_params(tmp_path, REPO, train={"n_crtic": 5})
    proc = run_stage_script("params", tmp_path, {"DVC_STAGE": "params"})  # as under `dvc repro`
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: unknown key 'train.n_crtic'; did you mean 'n_critic'?")
    assert line.endswith("(`git show HEAD:params.yaml > params.yaml` writes the committed values back) and run again")
    assert "dvc checkout" not in line  # nothing was deleted, so nothing to restore
    assert (tmp_path / MARKER).read_bytes() == before


def params_file(tmp_path: Path, **sections: dict) -> Path:
    edit_params(tmp_path, REPO, **sections)
    return tmp_path / "params.yaml"


@pytest.mark.parametrize(
    ("sections", "fragment"),
    [
        ({"render": {"n_images": 65}}, "render.n_images = 65 is larger than train.n_fixed = 64"),
        ({"evaluate": {"n_samples": 100, "kid_subset_size": 101}}, "evaluate.kid_subset_size = 101 is larger"),
        ({"evaluate": {"n_samples": 50000, "kid_subset_size": 10001}}, "at most the 10000 real images it is compared"),
        ({"evaluate": {"n_samples": 100, "kid_subset_size": 50, "pr_k": 100}}, "evaluate.pr_k = 100 needs more"),
        ({"quality": {"n_samples": 100, "kid_subset_size": 101}}, "quality.kid_subset_size = 101 is larger"),
        ({"quality": {"n_samples": 50000, "kid_subset_size": 10001}}, r"\(10000: .*the 10000 real images"),  # its slice
        ({"quality": {"n_samples": 100, "kid_subset_size": 50, "pr_k": 100}}, "quality.pr_k = 100 needs more"),
    ],
)
def test_rules_between_keys_are_checked_before_any_stage_runs(tmp_path: Path, sections: dict, fragment: str):
    with pytest.raises(UserError, match=fragment):
        check_params(params_file(tmp_path, **sections))


def test_unknown_and_missing_sections(tmp_path: Path):
    path = params_file(tmp_path)
    path.write_text(path.read_text() + "trian:\n  lr: 0.1\n")
    with pytest.raises(UserError, match=r"unknown section 'trian' in .*; did you mean 'train'\?"):
        check_params(path)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    del params["gif"]
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(UserError, match="section 'gif' is missing"):
        check_params(path)


def without(tmp_path: Path, section: str, *keys: str) -> Path:
    """The repo's params.yaml without ``keys`` of ``section`` (all of them when none is named: an empty section)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params[section] = {k: v for k, v in params[section].items() if keys and k not in keys} or None
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return tmp_path / "params.yaml"


@pytest.mark.parametrize(
    ("section", "keys", "message"),
    [
        ("train", ["lr"], "train.lr is missing from {path}, so it would take its default 5.0e-05 from the code, which "
         "DVC does not track; add `lr: 5.0e-05` to the train section"),
        ("train", ["g_hidden", "loss"], "train.g_hidden is missing from {path}, so it would take its default "
         "[128, 256, 512, 1024] from the code, which DVC does not track; add `g_hidden: [128, 256, 512, 1024]` to the "
         "train section; also missing: train.loss"),
        ("quality", [], "quality.n_samples is missing from {path}, so it would take its default 2000 from the code, "
         "which DVC does not track; add `n_samples: 2000` to the quality section; also missing: quality.batch_size, "
         "quality.kid_subsets, quality.kid_subset_size and 2 more (docs/params.md lists every default)"),
        ("render", ["caption"], "add `caption: true` to the render section"),
    ],
)  # fmt: skip
def test_a_tracked_section_must_write_out_every_key(tmp_path: Path, section: str, keys: list[str], message: str):
    """A default in the code is outside every stage's deps: a change of it would change outputs unseen by DVC."""
    path = without(tmp_path, section, *keys)
    with pytest.raises(UserError) as err:
        check_params(path)
    assert message.format(path=path) in str(err.value)


def test_the_untracked_data_section_may_leave_its_keys_to_the_defaults(tmp_path: Path):
    """data.source cannot change an output (every source gives the same bytes), so no stage tracks it."""
    assert check_params(without(tmp_path, "data"))["data"] == SECTIONS["data"]()


def test_repo_params_pass():
    cfg = check_params(REPO / "params.yaml")
    assert set(cfg) == set(SECTIONS)
