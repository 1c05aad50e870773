"""Neural style transfer by optimising pixels (Gatys, Ecker & Bethge 2016), and texture synthesis
(Gatys, Ecker & Bethge 2015), with the loss network and losses used in training.

Extras from the follow-up work: blends of several styles (the weighted average of their Gram
targets), a style scale, colour preservation by luminance-only transfer (Gatys et al. 2017) and
coarse-to-fine optimisation over several resolutions for large outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from styletrain.errors import UserError
from styletrain.losses import LossConfig, PerceptualLoss
from styletrain.metadata import MIN_SIDE
from styletrain.reference import color, objectives
from styletrain.reference.optimize import Result, optimize
from styletrain.reference.param import check_side, initial_image, noise_image, resize, scaled_size
from styletrain.reference.pyramid import ImagePyramid
from styletrain.vgg import LossNetwork, WeightsSpec


def perceptual_loss(config: LossConfig = LossConfig(), *, weights: WeightsSpec = None,
                    loss_network: LossNetwork | None = None) -> PerceptualLoss:
    """The training loss (no styles cached yet), reusing ``loss_network`` when one is given."""
    return PerceptualLoss(config, weights=weights, loss_network=loss_network)


def blend_weights(count: int, weights: Sequence[float] | None) -> Tensor:
    """(1, N) style weights normalised to sum to 1; equal weights when none are given."""
    if weights is None:
        weights = [1.0] * count
    if len(weights) != count:
        raise UserError(f"give one style weight per style image ({count}); got {len(weights)}: {list(weights)}")
    w = torch.tensor([float(v) for v in weights])
    if not torch.isfinite(w).all() or (w < 0).any() or not w.sum() > 0:
        raise UserError(f"style weights must be finite, non-negative and sum to more than 0; got {list(weights)}")
    return (w / w.sum()).unsqueeze(0)


def _style_side(style: Tensor, out_size: tuple[int, int], style_scale: float, style_size: int | None,
                final_side: int) -> tuple[int, int]:
    """Size of a style image for an output of ``out_size`` (style_size is given at the final size)."""
    if style_scale <= 0:
        raise UserError(f"style scale must be positive; got {style_scale}")
    side = (style_size if style_size else style_scale * final_side) * max(out_size) / final_side
    check_side(side, "the style image (--style-scale or --style-size)")
    return scaled_size(tuple(style.shape[-2:]), max(MIN_SIDE, round(side)))


def stylize(
    content: Tensor,
    styles: Sequence[Tensor],
    *,
    style_weights: Sequence[float] | None = None,
    config: LossConfig = LossConfig(),
    steps: int = 100,
    optimizer: str = "lbfgs",
    lr: float | None = None,
    init: str = "content",
    style_scale: float = 1.0,
    style_size: int | None = None,
    preserve_color: bool = False,
    scales: int = 1,
    loss: PerceptualLoss | None = None,
    weights: WeightsSpec = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = False,
) -> Result:
    """Optimise an image to have ``content``'s features and the (blended) Gram statistics of ``styles``.

    ``content`` is (1, 3, H, W) in [0, 1] at the output size; style images are any size and are
    resized so their longer side is ``style_size`` or ``style_scale`` times the output's longer side.
    ``steps`` iterations run at each of ``scales`` resolutions (coarse to fine, halving the side).
    ``loss`` reuses a built ``PerceptualLoss`` (its VGG, on its device) instead of loading one on
    ``device``; its cached style targets are replaced by these styles'.
    With ``preserve_color`` the luminance is what is optimised, against luminance-matched styles, and
    the photo's colours are put back afterwards: the losses returned are the luminance image's.
    """
    if not styles:
        raise UserError("give at least one style image")
    w = blend_weights(len(styles), style_weights)
    final = tuple(content.shape[-2:])
    for s in styles:  # their sizes at the finest scale, checked before VGG is loaded
        _style_side(s, final, style_scale, style_size, max(final))
    loss = loss or perceptual_loss(config, weights=weights).to(device)
    generator = torch.Generator().manual_seed(seed)
    if preserve_color:
        styles = [color.match_luminance(s, content) for s in styles]
        target = color.luminance_image(content)
    else:
        target = content
    device = loss.vgg.mean.device

    def step(size: tuple[int, int], previous: Tensor | None) -> Result:
        loss.set_styles([resize(s, _style_side(s, size, style_scale, style_size, max(final))).to(device)
                         for s in styles])
        scaled = resize(target, size).to(device)
        if previous is None:
            image = initial_image(init, content=scaled, style=styles[0].to(device), size=size,
                                  generator=generator).to(device)
        else:
            image = resize(previous, size)
        objective = objectives.style_transfer(loss, w.to(device), loss.content_features(scaled))
        return optimize(image, objective, steps=steps, method=optimizer, lr=lr, progress=progress,
                        desc=f"gatys {size[1]}x{size[0]}")

    result = ImagePyramid(scales).run(final, step)
    if preserve_color:
        result.image = color.with_chroma(result.image, content.to(device))
    return result


def synthesize(
    styles: Sequence[Tensor],
    size: tuple[int, int],
    *,
    style_weights: Sequence[float] | None = None,
    config: LossConfig = LossConfig(),
    steps: int = 100,
    optimizer: str = "lbfgs",
    lr: float | None = None,
    style_size: int | None = None,
    scales: int = 1,
    loss: PerceptualLoss | None = None,
    weights: WeightsSpec = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = False,
) -> Result:
    """Texture synthesis: an image of ``size`` (H, W), from noise, matching the styles' Gram matrices.

    The style images are read at ``style_size`` (longer side; default: their own size) at the final
    resolution, so any output size keeps the texture's scale.
    """
    if not styles:
        raise UserError("give at least one style image")
    if min(size) < MIN_SIDE:
        raise UserError(f"texture size must be at least {MIN_SIDE} px per side; got {size[1]}x{size[0]}")
    check_side(max(size), "the texture")
    check_side(style_size or 0, "the style image (--style-size)")
    w = blend_weights(len(styles), style_weights)
    loss = loss or perceptual_loss(config, weights=weights).to(device)
    device = loss.vgg.mean.device
    generator = torch.Generator().manual_seed(seed)

    def step(scaled: tuple[int, int], previous: Tensor | None) -> Result:
        factor = max(scaled) / max(size)
        loss.set_styles([
            resize(s, scaled_size(tuple(s.shape[-2:]),
                                  max(MIN_SIDE, round((style_size or max(s.shape[-2:])) * factor)))).to(device)
            for s in styles])
        image = (noise_image(scaled, generator=generator) if previous is None else resize(previous, scaled))
        return optimize(image.to(device), objectives.texture(loss, w.to(device)), steps=steps, method=optimizer,
                        lr=lr, progress=progress, desc=f"texture {scaled[1]}x{scaled[0]}")

    return ImagePyramid(scales).run(tuple(size), step)
