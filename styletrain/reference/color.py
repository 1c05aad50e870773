"""Colour spaces for colour-preserving style transfer (Gatys et al. 2017, luminance-only transfer)."""

from __future__ import annotations

import torch
from torch import Tensor

from styletrain.runtime.adjust import RGB_TO_YIQ, YIQ_TO_RGB

_RGB_TO_YIQ = torch.from_numpy(RGB_TO_YIQ)
_YIQ_TO_RGB = torch.from_numpy(YIQ_TO_RGB)


def rgb_to_yiq(image: Tensor) -> Tensor:
    """(B, 3, H, W) RGB -> YIQ."""
    return torch.einsum("ij,bjhw->bihw", _RGB_TO_YIQ.to(image), image)


def yiq_to_rgb(image: Tensor) -> Tensor:
    """(B, 3, H, W) YIQ -> RGB."""
    return torch.einsum("ij,bjhw->bihw", _YIQ_TO_RGB.to(image), image)


def luminance_image(image: Tensor) -> Tensor:
    """The luminance of an RGB image as a grey RGB image (what VGG sees in luminance-only transfer)."""
    return rgb_to_yiq(image)[:, :1].expand(-1, 3, -1, -1).contiguous()


def match_luminance(style: Tensor, content: Tensor) -> Tensor:
    """Grey style image whose luminance has the content's mean and standard deviation (their eq. 1)."""
    ys, yc = rgb_to_yiq(style)[:, :1], rgb_to_yiq(content)[:, :1]
    matched = (ys - ys.mean()) / ys.std().clamp_min(1e-6) * yc.std() + yc.mean()
    return matched.clamp(0, 1).expand(-1, 3, -1, -1).contiguous()


def with_chroma(luminance: Tensor, chroma_source: Tensor) -> Tensor:
    """RGB image with the luminance of ``luminance`` (grey or RGB) and the colour of ``chroma_source``."""
    y = rgb_to_yiq(luminance)[:, :1]
    iq = rgb_to_yiq(chroma_source)[:, 1:]
    return yiq_to_rgb(torch.cat([y, iq], dim=1)).clamp(0, 1)
