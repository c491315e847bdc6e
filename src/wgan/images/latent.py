"""Walks through the generator's latent space: spherical interpolation between random points.

Latent vectors are drawn from a standard normal, so they live near a sphere of radius ``sqrt(latent_dim)``;
a straight line between two of them dips towards the origin, where the generator saw no training input.
Spherical interpolation (``slerp``, Shoemake 1985, recommended for GANs by White 2016) keeps to the sphere and
moves at a constant angular speed, so consecutive frames of a walk change by the same amount.
"""

from __future__ import annotations

import torch

PARALLEL_EPS = 1e-7  # below this |sin(angle)|, two points are (anti)parallel and slerp falls back to lerp


def slerp(a: torch.Tensor, b: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """Spherical interpolation from ``a`` (t = 0) to ``b`` (t = 1) along the last dimension.

    ``sin((1-t)w)/sin(w) a + sin(tw)/sin(w) b`` with ``w`` the angle between them, computed in float64; exactly
    ``a`` at t = 0 and ``b`` at t = 1.
    """
    a64, b64 = a.double(), b.double()
    t64 = torch.as_tensor(t, dtype=torch.float64)
    cos = torch.nn.functional.cosine_similarity(a64, b64, dim=-1).clamp(-1.0, 1.0).unsqueeze(-1)
    omega = torch.arccos(cos)
    sin = torch.sin(omega)
    parallel = sin.abs() < PARALLEL_EPS
    safe = torch.where(parallel, torch.ones_like(sin), sin)
    wa = torch.where(parallel, 1.0 - t64, torch.sin((1.0 - t64) * omega) / safe)
    wb = torch.where(parallel, t64, torch.sin(t64 * omega) / safe)
    return (wa * a64 + wb * b64).to(a.dtype)


def keyframes(steps: int, points: int) -> list[int]:
    """The frame at which a closed walk of ``steps`` frames reaches each of its ``points`` (0 first, spread evenly)."""
    return [k * steps // points for k in range(points)]


def latent_walk(anchors: torch.Tensor, steps: int) -> torch.Tensor:
    """A closed walk through ``anchors`` [K, ..., latent_dim]: ``steps`` frames [steps, ..., latent_dim].

    Frame ``keyframes(steps, K)[k]`` is anchor ``k`` exactly; between them the walk slerps to the next anchor,
    and from the last anchor back to the first, so the frame after the last one would be frame 0 again (a GIF
    of the frames loops without a jump). All rows (the ``...`` dimensions) move in lockstep.
    """
    count = int(anchors.shape[0])
    if not 1 <= count <= steps:
        raise ValueError(f"a walk needs 1 <= points <= steps, got {count} points and {steps} steps")
    starts = keyframes(steps, count) + [steps]
    frames = []
    for k in range(count):
        a, b = anchors[k], anchors[(k + 1) % count]
        length = starts[k + 1] - starts[k]
        frames += [slerp(a, b, i / length) for i in range(length)]
    return torch.stack(frames)
