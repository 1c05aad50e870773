"""The coarse-to-fine image pyramid shared by Gatys, texture synthesis and DeepDream."""

from __future__ import annotations

import pytest
import torch

from styletrain.errors import UserError
from styletrain.reference.optimize import Result
from styletrain.reference.pyramid import ImagePyramid


def test_levels_run_coarse_to_fine_each_seeing_the_last_result() -> None:
    seen = []

    def step(size, previous):
        seen.append((size, None if previous is None else tuple(previous.shape[-2:])))
        return Result(torch.full((1, 3, *size), float(len(seen))), {"total": 0.0})

    result = ImagePyramid(3).run((64, 96), step)
    assert seen == [((16, 24), None), ((32, 48), (16, 24)), ((64, 96), (32, 48))]
    assert result.image.shape == (1, 3, 64, 96) and result.image[0, 0, 0, 0] == 3


def test_too_small_levels_are_refused_or_skipped() -> None:
    with pytest.raises(UserError, match="3 scales make the coarsest image 12x8; use fewer scales"):
        ImagePyramid(3).sizes((32, 48))
    assert ImagePyramid(3, 1.4, min_side=32, skip_small=True).sizes((40, 60)) == [(40, 60)]
    with pytest.raises(UserError, match="scales must be at least 1"):
        ImagePyramid(0)
