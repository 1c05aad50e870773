"""Turning diagnostics into pictures: heat maps, gradient images and rows of images."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

# An inferno-like ramp: black, purple, red, orange, pale yellow.
_RAMP = torch.tensor([[0.0, 0.0, 0.02], [0.34, 0.06, 0.43], [0.73, 0.21, 0.33],
                      [0.98, 0.55, 0.04], [0.99, 1.0, 0.64]])


def colorize(heat: Tensor) -> Tensor:
    """(B, 1, H, W) map -> (B, 3, H, W) colours, scaled so each map's maximum is the brightest."""
    heat = heat.float()
    low = heat.flatten(1).amin(1).view(-1, 1, 1, 1).clamp(max=0)  # signed maps (occlusion) start at 0
    high = heat.flatten(1).amax(1).view(-1, 1, 1, 1)
    t = ((heat - low) / (high - low).clamp_min(1e-12)).clamp(0, 1) * (len(_RAMP) - 1)
    i = t.floor().long().clamp(max=len(_RAMP) - 2)
    frac = t - i
    ramp = _RAMP.to(heat.device)
    lo, hi = ramp[i.squeeze(1)], ramp[i.squeeze(1) + 1]  # (B, H, W, 3)
    return (lo + (hi - lo) * frac.squeeze(1).unsqueeze(-1)).permute(0, 3, 1, 2)


def overlay(image: Tensor, heat: Tensor, alpha: float = 0.6) -> Tensor:
    """A heat map blended over a (darkened, grey) copy of the image."""
    grey = image.mean(dim=1, keepdim=True).expand_as(image)
    return ((1 - alpha) * grey + alpha * colorize(heat)).clamp(0, 1)


def gradient_image(grad: Tensor) -> Tensor:
    """An input-shaped gradient shown around grey: +-3 standard deviations span the range."""
    std = grad.flatten(1).std(1).view(-1, 1, 1, 1).clamp_min(1e-12)
    return (0.5 + grad / (6 * std)).clamp(0, 1)


def show_attribution(image: Tensor, attribution: Tensor) -> Tensor:
    """An attribution as a picture: an input-shaped gradient (B, 3, H, W) shown around grey, a
    per-pixel map (B, 1, H, W) as a heat map over the image."""
    return gradient_image(attribution) if attribution.shape[1] == 3 else overlay(image, attribution)


def hstack(images: Sequence[Tensor], *, gap: int = 4, fill: float = 1.0) -> Tensor:
    """Images (1, 3, H_i, W_i) side by side, top-aligned, with ``gap`` pixels of ``fill`` between."""
    height = max(im.shape[-2] for im in images)
    parts = []
    for k, im in enumerate(images):
        im = im.detach().float().cpu()
        parts.append(F.pad(im, (0, 0, 0, height - im.shape[-2]), value=fill))
        if k < len(images) - 1 and gap:
            parts.append(torch.full((1, 3, height, gap), fill))
    return torch.cat(parts, dim=3)


def vstack(images: Sequence[Tensor], *, gap: int = 4, fill: float = 1.0) -> Tensor:
    """Images (1, 3, H_i, W_i) one above the other, left-aligned."""
    return hstack([im.transpose(-1, -2) for im in images], gap=gap, fill=fill).transpose(-1, -2)


def draw_box(image: Tensor, box: tuple[int, int, int, int], *, color: tuple[float, float, float] = (1.0, 0.1, 0.1),
             width: int = 2) -> Tensor:
    """A copy of ``image`` (1, 3, H, W) with the outline of box (left, top, right, bottom) drawn on it."""
    out = image.detach().clone()
    left, top, right, bottom = box
    paint = torch.tensor(color, dtype=out.dtype, device=out.device).view(1, 3, 1, 1)
    out[..., top:top + width, left:right] = paint
    out[..., max(top, bottom - width):bottom, left:right] = paint
    out[..., top:bottom, left:left + width] = paint
    out[..., top:bottom, max(left, right - width):right] = paint
    return out
