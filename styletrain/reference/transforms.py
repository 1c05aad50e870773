"""Image transforms for the optimisation loop.

Two kinds: *robustness transforms* applied (differentiably) to the image before the objective sees
it, e.g. random jitter (lucent's ``transforms``), and *step regularisers* applied to the pixels after
each step, e.g. the L2 decay, periodic blur and small-value clipping of Yosinski et al. (2015).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

Transform = Callable[[Tensor], Tensor]
"""Differentiable image -> image map applied before the objective."""
StepRegulariser = Callable[[Tensor, int], None]
"""In-place change of the optimised pixels after step ``i`` (called under ``torch.no_grad``)."""


def jitter(max_shift: int, generator: torch.Generator | None = None) -> Transform:
    """Roll the image by a random offset in [-max_shift, max_shift] on both axes (DeepDream's jitter)."""

    def transform(image: Tensor) -> Tensor:
        if max_shift <= 0:
            return image
        dy, dx = torch.randint(-max_shift, max_shift + 1, (2,), generator=generator).tolist()
        return torch.roll(image, shifts=(dy, dx), dims=(-2, -1))

    return transform


def gaussian_blur(image: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur with reflect padding, the same size as the input."""
    if sigma <= 0:
        return image
    radius = max(1, int(3 * sigma + 0.5))
    radius = min(radius, image.shape[-1] - 1, image.shape[-2] - 1)
    x = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = image.shape[1]
    out = F.pad(image, (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def decay(rate: float, centre: float = 0.5) -> StepRegulariser:
    """L2 decay towards mid-grey: x <- c + (1 - rate)(x - c) (Yosinski et al.'s theta_decay)."""

    def regularise(image: Tensor, step: int) -> None:
        image.sub_(centre).mul_(1.0 - rate).add_(centre)

    return regularise


def blur_every(every: int, sigma: float) -> StepRegulariser:
    """Gaussian-blur the pixels every ``every`` steps (Yosinski et al.'s blur_every / blur_radius)."""

    def regularise(image: Tensor, step: int) -> None:
        if every > 0 and (step + 1) % every == 0:
            image.copy_(gaussian_blur(image, sigma))

    return regularise


def clip_small_norm(percentile: float, centre: float = 0.5) -> StepRegulariser:
    """Reset pixels whose deviation from grey (L2 over colour) lies below a percentile to grey."""

    def regularise(image: Tensor, step: int) -> None:
        if percentile <= 0:
            return
        norm = (image - centre).norm(dim=1, keepdim=True)
        threshold = torch.quantile(norm.flatten(1).float(), percentile / 100.0, dim=1).view(-1, 1, 1, 1)
        image.copy_(torch.where(norm < threshold, torch.full_like(image, centre), image))

    return regularise
