"""benchmarks/selection_dials.py's own logic, the per-group pick (docs/benchmarks.md, "Picking or moving samples
instead of clamping", rests on it); the realism score and the selection are the library's (tests/test_selection.py)."""

from __future__ import annotations

import runpy
from pathlib import Path

import torch

DIALS = runpy.run_path(str(Path(__file__).resolve().parents[1] / "benchmarks/selection_dials.py"))


def test_each_group_keeps_its_share_and_its_best() -> None:
    groups = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)[
        torch.randperm(100, generator=torch.Generator().manual_seed(0))
    ]
    score = torch.randn(100, generator=torch.Generator().manual_seed(1))
    kept = DIALS["keep_best_per_group"](score, groups, 50)
    assert kept.tolist() == sorted(set(kept.tolist())) and len(kept) == 50
    assert torch.bincount(groups[kept], minlength=3).tolist() == [30, 15, 5]
    for g, quota in enumerate([30, 15, 5]):
        members = (groups == g).nonzero().squeeze(1)
        best = members[score[members].argsort(descending=True)[:quota]]
        assert sorted(best.tolist()) == sorted(kept[groups[kept] == g].tolist())


def test_largest_remainders_fill_the_quota() -> None:
    groups = torch.tensor([0, 0, 1, 1, 2, 2, 2])  # shares 2/7, 2/7, 3/7 of 3: 0.86, 0.86, 1.29 -> 1, 1, 1
    kept = DIALS["keep_best_per_group"](torch.arange(7.0), groups, 3)
    assert kept.tolist() == [1, 3, 6]
