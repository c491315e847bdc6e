"""Linear CKA (Kornblith et al. 2019): how alike two feature spaces are, over the same images.

``CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` for column-centred ``N x D1`` and ``N x D2``
features: 1 for the same space up to a rotation and a scale, near 0 for unrelated ones. It compares networks of
different widths, which is why it measures whether the judge is a near copy of the classifier
(benchmarks/judge_independence.py, docs/quality.md#the-judge). torchmetrics has no CKA; this is its definition.
"""

from __future__ import annotations

import torch


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two feature matrices with one row per image (the same images, in the same order), in float64."""
    if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise ValueError(f"need N x D1 and N x D2 features of the same N >= 2 images, got {tuple(x.shape)}, "
                         f"{tuple(y.shape)}")  # fmt: skip
    xc = x.detach().double() - x.detach().double().mean(0)
    yc = y.detach().double() - y.detach().double().mean(0)
    cross = torch.linalg.matrix_norm(yc.T @ xc) ** 2
    return float(cross / (torch.linalg.matrix_norm(xc.T @ xc) * torch.linalg.matrix_norm(yc.T @ yc)))
