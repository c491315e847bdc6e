"""One home for every path, checked against dvc.yaml."""

from __future__ import annotations

import yaml
from conftest import REPO

from wgan import paths


def _entries(items: list[str | dict]) -> set[str]:
    """The paths of a dvc.yaml list whose entries are plain strings or one-key mappings with options."""
    return {item if isinstance(item, str) else next(iter(item)) for item in items}


def test_stage_paths_are_exactly_the_data_deps_and_outputs_in_dvc_yaml() -> None:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert set(stages) == set(paths.STAGES)
    for name, stage in stages.items():
        reads, writes = paths.STAGES[name]
        data_deps = {d for d in _entries(stage.get("deps", [])) if d.split("/")[0] not in paths.CODE_DIRS}
        outputs = set().union(*(_entries(stage.get(kind, [])) for kind in ("outs", "metrics", "plots")))
        assert data_deps == {p.as_posix() for p in reads}, name
        assert outputs == {p.as_posix() for p in writes}, name
