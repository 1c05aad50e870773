"""What the reference optimisers minimise: each objective maps an image to named loss terms.

The loop (``optimize.optimize``) minimises the sum of the terms and shows each one in its progress
bar. Maximising an activation is minimising its negative. All VGG features come from the shared
``LossNetwork`` and all style terms from the shared ``PerceptualLoss``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from styletrain.losses import PerceptualLoss
from styletrain.vgg import LossNetwork

Objective = Callable[[Tensor], Mapping[str, Tensor]]
"""image (1, 3, H, W) -> named scalar terms whose sum is minimised."""


def style_transfer(loss: PerceptualLoss, style_weights: Tensor, content_features: Mapping[str, Tensor]) -> Objective:
    """Gatys et al.: every term of the shared perceptual loss (content, blended style, TV by default)."""

    def objective(image: Tensor) -> Mapping[str, Tensor]:
        return loss(image, style_weights, content_features=content_features)

    return objective


def texture(loss: PerceptualLoss, style_weights: Tensor) -> Objective:
    """Gatys et al. 2015 texture synthesis: the loss's terms that need no content (Gram matching, TV)."""

    def objective(image: Tensor) -> Mapping[str, Tensor]:
        return loss(image, style_weights, use_content=False)

    return objective


def activation(network: LossNetwork, layer: str, channel: int | None = None,
               position: tuple[int, int] | None = None, *, power: int = 2) -> Objective:
    """Amplify a layer (DeepDream: mean squared activation), one channel, or one unit of it.

    ``power=2`` maximises the L2 norm of the chosen activations (DeepDream); ``power=1`` their mean
    (unit visualisation). ``position`` (y, x) picks the unit at that place, as a fraction of the map.
    """

    def objective(image: Tensor) -> Mapping[str, Tensor]:
        act = network(image, [layer])[layer]
        if channel is not None:
            act = act[:, channel]
        if position is not None:
            h, w = act.shape[-2:]
            act = act[..., min(h - 1, int(position[0] * h)), min(w - 1, int(position[1] * w))]
        return {"activation": -act.float().pow(power).mean()}

    return objective


def tv_beta(image: Tensor, beta: float) -> Tensor:
    """Mahendran & Vedaldi's TV^beta: mean over pixels of ((dx^2 + dy^2))^(beta/2), summed over colour."""
    dy = image[:, :, 1:, :-1] - image[:, :, :-1, :-1]
    dx = image[:, :, :-1, 1:] - image[:, :, :-1, :-1]
    return (dx.pow(2) + dy.pow(2) + 1e-8).pow(beta / 2).sum(1).mean()


def feature_inversion(network: LossNetwork, layer: str, target: Tensor, *, alpha: float = 6.0,
                      alpha_weight: float = 1e-4, beta: float = 2.0, tv_weight: float = 1.0) -> Objective:
    """Mahendran & Vedaldi 2015: match a layer's code, regularised by the alpha-norm and TV^beta.

    The feature term is normalised by the target's energy (their ``||phi(x) - phi0||^2 / ||phi0||^2``),
    pixels are taken centred on grey and scaled to [-1, 1] so the default weights carry over between
    image sizes. Defaults: alpha 6, beta 2 (their recommendation for VGG-sized nets).
    """
    norm = target.float().pow(2).sum().clamp_min(1e-12)

    def objective(image: Tensor) -> Mapping[str, Tensor]:
        feats = network(image, [layer])[layer].float()
        centred = 2.0 * image - 1.0
        return {"feature": (feats - target).pow(2).sum() / norm,
                "alpha": alpha_weight * centred.abs().pow(alpha).mean(),
                "tv": tv_weight * tv_beta(centred, beta)}

    return objective


def feature_distance(network: LossNetwork, layer: str, image: Tensor, target: Tensor) -> float:
    """Relative squared distance of ``image``'s code at ``layer`` to ``target`` (for reports and tests)."""
    with torch.no_grad():
        feats = network(image, [layer])[layer].float()
        return float(F.mse_loss(feats, target, reduction="sum") / target.float().pow(2).sum().clamp_min(1e-12))
