"""How the optimised image starts and changes scale: content, noise or style initialisation, and
resizing between the resolutions of coarse-to-fine optimisation and DeepDream octaves.

Images are pixels in [0, 1] (the only parameterisation: the L-BFGS reference needs plain pixels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from styletrain.errors import UserError

INITS = ("content", "noise", "style")

MAX_SIDE = 4096
"""Longest side of an image the optimisers make, or of a style image they match: a typo such as
``--width 100000`` is refused up front instead of exhausting memory (VGG16's activations up to relu4_3
hold 264 floats per pixel, about 1 kB, before autograd's saved copies)."""


def check_side(side: float, what: str) -> None:
    """``UserError`` if ``what`` (its longer side ``side``) would be over ``MAX_SIDE``."""
    if side > MAX_SIDE:
        raise UserError(f"{what} would be {round(side)} px on its longer side; the most is {MAX_SIDE} px")


def noise_image(size: tuple[int, int], *, generator: torch.Generator | None = None,
                scale: float = 0.5, like: Tensor | None = None) -> Tensor:
    """Mid-grey plus uniform noise of amplitude ``scale``: (1, 3, H, W) in [0, 1].

    The default spans the whole range: from low-contrast noise the Gram gradients are too small for
    L-BFGS to get going."""
    kwargs = {} if like is None else {"dtype": like.dtype}
    noise = torch.rand((1, 3, *size), generator=generator, **kwargs)
    out = 0.5 + scale * (2 * noise - 1)
    return out if like is None else out.to(like.device)


def resize(image: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize (antialiased when shrinking) of (B, C, H, W) images to ``size`` = (H, W)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)


def scaled_size(size: tuple[int, int], longer_side: int) -> tuple[int, int]:
    """(H, W) scaled so the longer side is ``longer_side``, keeping the aspect ratio."""
    scale = longer_side / max(size)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def initial_image(kind: str, *, content: Tensor | None = None, style: Tensor | None = None,
                  size: tuple[int, int] | None = None, generator: torch.Generator | None = None) -> Tensor:
    """The starting image for an optimisation: a copy of the content, noise, or the style resized."""
    if kind not in INITS:
        raise UserError(f"init must be one of {', '.join(INITS)}; got {kind!r}")
    like = content if content is not None else style
    size = size or tuple(like.shape[-2:])
    if kind == "content":
        if content is None:
            raise UserError("init 'content' needs a content image")
        return resize(content, size).clone()
    if kind == "style":
        if style is None:
            raise UserError("init 'style' needs a style image")
        return resize(style, size).clone()
    return noise_image(size, generator=generator, like=like)
