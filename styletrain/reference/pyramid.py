"""Coarse-to-fine optimisation: one image pyramid for Gatys, texture synthesis and DeepDream.

An ``ImagePyramid`` gives the sizes, coarsest first, and runs one step per level, handing each step
the previous level's result (as pystiche's ``pystiche.pyramid``): large structure is settled cheaply
at the small sizes and refined at the large ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from styletrain.errors import UserError
from styletrain.metadata import MIN_SIDE
from styletrain.reference.optimize import Result
from styletrain.reference.param import scaled_size

Step = Callable[[tuple[int, int], Tensor | None], Result]
"""``step(size, previous)``: optimise at ``size`` (H, W) given the previous level's result image at
its own size (None at the coarsest level)."""


@dataclass(frozen=True)
class ImagePyramid:
    """``levels`` sizes, the longer side divided by ``scale`` from one to the next, the last the full size.

    A level with a side under ``min_side`` is refused with a ``UserError``, or with ``skip_small``
    left out (DeepDream's octaves: the full size always stays).
    """

    levels: int = 1
    scale: float = 2.0
    min_side: int = MIN_SIDE
    skip_small: bool = False

    def __post_init__(self) -> None:
        if self.levels < 1:
            raise UserError(f"scales must be at least 1; got {self.levels}")
        if not self.scale > 1:
            raise UserError(f"the pyramid's scale between levels must be above 1; got {self.scale}")

    def sizes(self, size: tuple[int, int]) -> list[tuple[int, int]]:
        """(H, W) of every level for a full size ``size``, coarsest first."""
        size = (int(size[0]), int(size[1]))
        sizes = [scaled_size(size, round(max(size) / self.scale**k)) for k in reversed(range(self.levels))]
        if self.skip_small:
            return [s for s in sizes if min(s) >= self.min_side] or [size]
        if min(sizes[0]) < self.min_side:
            raise UserError(f"{self.levels} scales make the coarsest image {sizes[0][1]}x{sizes[0][0]}; "
                            f"use fewer scales or a larger size (each side at least {self.min_side} px)")
        return sizes

    def run(self, size: tuple[int, int], step: Step) -> Result:
        """Call ``step`` at every level, coarsest first; the finest level's result."""
        result = None
        for level in self.sizes(size):
            result = step(level, None if result is None else result.image)
        return result
