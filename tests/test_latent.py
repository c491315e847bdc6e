"""Spherical interpolation and closed latent walks: exact endpoints, constant angular speed, a loop without a jump."""

from __future__ import annotations

import pytest
import torch

from wgan.images.latent import keyframes, latent_walk, slerp
from wgan.models.sampling import draw_latents


def angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.arccos(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1).clamp(-1, 1))


def test_slerp_ends_exactly_at_its_endpoints() -> None:
    a, b = draw_latents((2, 5), 16, seed=0)
    assert torch.equal(slerp(a, b, 0.0), a)
    torch.testing.assert_close(slerp(a, b, 1.0), b)


def test_slerp_moves_at_constant_angular_speed_on_the_sphere() -> None:
    a, b = torch.nn.functional.normalize(draw_latents((2, 3), 32, seed=1), dim=-1)
    path = torch.stack([slerp(a, b, t / 10) for t in range(11)])
    steps = angle(path[:-1], path[1:])
    torch.testing.assert_close(steps, steps[:1].expand_as(steps), atol=1e-5, rtol=0)
    torch.testing.assert_close(steps.sum(0), angle(a, b), atol=1e-5, rtol=0)
    torch.testing.assert_close(path.norm(dim=-1), torch.ones(11, 3), atol=1e-6, rtol=0)


def test_slerp_of_parallel_vectors_is_linear() -> None:
    a = draw_latents((4,), 8, seed=2)
    torch.testing.assert_close(slerp(a, a, 0.3), a)
    torch.testing.assert_close(slerp(a, 2 * a, 0.5), 1.5 * a)


@pytest.mark.parametrize(("steps", "points"), [(32, 4), (10, 3), (7, 7), (5, 2)])
def test_walk_visits_every_point_and_closes(steps: int, points: int) -> None:
    anchors = torch.nn.functional.normalize(draw_latents((points, 3), 16, seed=3), dim=-1)  # equal norms: even angles
    walk = latent_walk(anchors, steps)
    assert walk.shape == (steps, 3, 16)
    stops = keyframes(steps, points)
    assert stops[0] == 0 and len(set(stops)) == points
    for k, frame in enumerate(stops):
        assert torch.equal(walk[frame], anchors[k])  # every row passes through its own points, in lockstep
    # the step after the last frame is the first frame: the last segment (last point -> first point) is as even as
    # any other, so a looping GIF has no jump
    last_len = steps - stops[-1]
    torch.testing.assert_close(slerp(anchors[-1], anchors[0], (last_len - 1) / last_len), walk[-1])
    if last_len > 1:
        torch.testing.assert_close(angle(walk[-1], walk[0]), angle(walk[-2], walk[-1]), atol=1e-5, rtol=0)


def test_draw_latents_is_seeded() -> None:
    assert torch.equal(draw_latents((4, 6), 10, seed=5), draw_latents((4, 6), 10, seed=5))
    assert not torch.equal(draw_latents((6,), 10, seed=5), draw_latents((6,), 10, seed=6))


def test_walk_needs_a_frame_per_point() -> None:
    with pytest.raises(ValueError, match="1 <= points <= steps"):
        latent_walk(draw_latents((5, 1), 4, seed=0), 4)
