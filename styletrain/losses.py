"""Perceptual losses: content (feature MSE), style (Gram MSE) and total variation.

Shared by training, the Gatys reference optimiser and ``evaluate``, so a fast net and the optimum
it approximates are always scored under exactly the same settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from styletrain.errors import UserError
from styletrain.vgg import LossNetwork, WeightsSpec


def gram_matrix(features: Tensor) -> Tensor:
    """Gram matrices of (B, C, H, W) features, normalised by C*H*W, computed in float32."""
    b, c, h, w = features.shape
    flat = features.float().reshape(b, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def total_variation(image: Tensor) -> Tensor:
    """Squared differences between neighbouring pixels, summed per image in 0-255 units and
    averaged over the batch: the scale of Johnson et al.'s code, where TV weights of 1e-6..1e-4 work."""
    dy = image[:, :, 1:, :] - image[:, :, :-1, :]
    dx = image[:, :, :, 1:] - image[:, :, :, :-1]
    return (dy.float().pow(2).sum() + dx.float().pow(2).sum()) * 255.0**2 / image.shape[0]


@dataclass(frozen=True)
class LossConfig:
    """Loss layers and weights. The defaults suit the Caffe-VGG16 weights (Johnson et al.'s code)."""

    content_layer: str = "relu3_3"
    style_layers: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
    content_weight: float = 1.0
    style_weight: float = 5.0
    style_layer_weights: tuple[float, ...] | None = None
    tv_weight: float = 1e-5
    arch: str = "vgg16"

    def __post_init__(self) -> None:
        if self.style_layer_weights is not None and len(self.style_layer_weights) != len(self.style_layers):
            raise UserError(
                f"style_layer_weights needs one weight per style layer ({len(self.style_layers)}); "
                f"got {len(self.style_layer_weights)}"
            )
        for name in ("content_weight", "style_weight", "tv_weight"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be non-negative; got {getattr(self, name)}")

    @property
    def layer_weights(self) -> tuple[float, ...]:
        return self.style_layer_weights or (1.0,) * len(self.style_layers)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LossTerms:
    """Weighted loss terms (scalars); ``total`` is their sum."""

    content: Tensor
    style: Tensor
    tv: Tensor
    total: Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.total = self.content + self.style + self.tv

    def as_floats(self) -> dict[str, float]:
        return {k: float(v) for k, v in (("content", self.content), ("style", self.style),
                                          ("tv", self.tv), ("total", self.total))}


class PerceptualLoss(nn.Module):
    """Content + style + TV loss against N cached style targets.

    Style images are given once; their Gram matrices are cached as buffers (N, C, C) per layer.
    ``forward`` takes per-sample style weights (B, N): one-hot rows select a style, other convex
    rows use the weighted average of the Gram targets (how Gatys blends several styles).
    """

    def __init__(
        self,
        config: LossConfig = LossConfig(),
        styles: Sequence[Tensor] = (),
        *,
        weights: WeightsSpec = None,
        loss_network: LossNetwork | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        layers = (config.content_layer, *config.style_layers)
        self.vgg = loss_network or LossNetwork(layers, arch=config.arch, weights=weights)
        self.num_styles = 0
        if styles:
            self.set_styles(styles)

    @torch.no_grad()
    def set_styles(self, styles: Sequence[Tensor]) -> None:
        """Compute and cache the Gram targets of style images, each (1, 3, H, W) in [0, 1]."""
        grams: dict[str, list[Tensor]] = {layer: [] for layer in self.config.style_layers}
        for image in styles:
            feats = self.vgg(image.to(self.vgg.mean.device), self.config.style_layers)
            for layer in self.config.style_layers:
                grams[layer].append(gram_matrix(feats[layer])[0])
        for i, layer in enumerate(self.config.style_layers):
            self.register_buffer(f"gram_{i}", torch.stack(grams[layer]), persistent=False)
        self.num_styles = len(styles)

    def style_grams(self, style_weights: Tensor) -> list[Tensor]:
        """Target Gram matrices (B, C, C) per style layer for style weights (B, N)."""
        if style_weights.ndim != 2 or style_weights.shape[1] != self.num_styles:
            raise ValueError(f"style weights must be (B, {self.num_styles}); got {tuple(style_weights.shape)}")
        w = style_weights.float()
        return [torch.einsum("bn,ncd->bcd", w, getattr(self, f"gram_{i}"))
                for i in range(len(self.config.style_layers))]

    @torch.no_grad()
    def content_features(self, content: Tensor) -> Tensor:
        """Content target: features at the content layer only (the net stops there)."""
        return self.vgg(content, [self.config.content_layer])[self.config.content_layer]

    def forward(
        self, output: Tensor, style_weights: Tensor, *, content: Tensor | None = None,
        content_features: Tensor | None = None,
    ) -> LossTerms:
        """Loss of ``output`` images against their content (images or cached features) and styles."""
        cfg = self.config
        if content_features is None:
            if content is None:
                raise ValueError("pass content images or content_features")
            content_features = self.content_features(content)
        feats = self.vgg(output)
        content_loss = cfg.content_weight * F.mse_loss(
            feats[cfg.content_layer].float(), content_features.float()
        )
        return LossTerms(
            content=content_loss,
            style=self.style_loss(feats, style_weights),
            tv=cfg.tv_weight * total_variation(output),
        )

    def style_loss(self, features: dict[str, Tensor], style_weights: Tensor) -> Tensor:
        """Weighted style term of VGG ``features`` (from ``self.vgg``) against the blended Gram targets."""
        cfg = self.config
        loss = features[cfg.style_layers[0]].new_zeros((), dtype=torch.float32)
        for layer, weight, target in zip(cfg.style_layers, cfg.layer_weights, self.style_grams(style_weights)):
            loss = loss + weight * F.mse_loss(gram_matrix(features[layer]), target)
        return cfg.style_weight * loss
