"""Perceptual losses: content (feature MSE), style (Gram MSE) and total variation, one class per term.

Each term is a module with a ``name`` and its own ``weight`` (as in pystiche); ``PerceptualLoss``
runs the VGG loss network once for all terms and returns their weighted values by name
(``LossTerms``). Shared by training, the Gatys reference optimiser and ``evaluate``, so a fast net
and the optimum it approximates are always scored under exactly the same settings.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from styletrain.loss_config import LossConfig
from styletrain.vgg import LossNetwork, WeightsSpec

__all__ = ["ContentLoss", "LossConfig", "LossInputs", "LossTerm", "LossTerms", "PerceptualLoss", "StyleLoss",
           "TotalVariationLoss", "gram_matrix", "total_variation"]


def gram_matrix(features: Tensor) -> Tensor:
    """Gram matrices of (B, C, H, W) features, normalised by C*H*W, computed in float32 even under
    autocast (in bf16 the style loss near its target is mostly rounding: 10x the float32 value)."""
    b, c, h, w = features.shape
    with torch.autocast(features.device.type, enabled=False):
        flat = features.float().reshape(b, c, h * w)
        return flat @ flat.transpose(1, 2) / (c * h * w)


def total_variation(image: Tensor) -> Tensor:
    """Squared differences between neighbouring pixels, summed per image in 0-255 units and
    averaged over the batch: the scale of Johnson et al.'s code, where TV weights of 1e-6..1e-4 work."""
    dy = image[:, :, 1:, :] - image[:, :, :-1, :]
    dx = image[:, :, :, 1:] - image[:, :, :, :-1]
    return (dy.float().pow(2).sum() + dx.float().pow(2).sum()) * 255.0**2 / image.shape[0]


@dataclass
class LossInputs:
    """What a loss term may look at: the output images, their VGG features at every term's layers,
    the content images' features at the content layers, and per-sample style weights (B, N)."""

    image: Tensor
    features: Mapping[str, Tensor]
    content: Mapping[str, Tensor]
    style_weights: Tensor | None


class LossTerm(nn.Module):
    """One weighted term of the perceptual loss; ``forward(inputs)`` returns its weighted scalar.

    ``layers`` are the VGG layers of the output it reads, ``content_layers`` those of the content
    images it compares with (none: it needs no content, as in texture synthesis).
    """

    name = "term"

    def __init__(self, weight: float, *, layers: Sequence[str] = (), content_layers: Sequence[str] = ()) -> None:
        super().__init__()
        self.weight = weight
        self.layers = tuple(layers)
        self.content_layers = tuple(content_layers)

    def set_styles(self, features: Sequence[Mapping[str, Tensor]]) -> None:
        """Cache targets from the style images' VGG features (one mapping per style); most terms need none."""

    def forward(self, inputs: LossInputs) -> Tensor:
        raise NotImplementedError


class ContentLoss(LossTerm):
    """Feature reconstruction: MSE between the output's and the content's features at one layer."""

    name = "content"

    def __init__(self, layer: str, weight: float) -> None:
        super().__init__(weight, layers=[layer], content_layers=[layer])
        self.layer = layer

    def forward(self, inputs: LossInputs) -> Tensor:
        return self.weight * F.mse_loss(inputs.features[self.layer].float(), inputs.content[self.layer].float())


class StyleLoss(LossTerm):
    """Gram matching against N cached style targets, blended per sample by the style weights (B, N).

    One-hot rows select a style, other convex rows use the weighted average of the Gram targets (how
    Gatys blends several styles); each layer's MSE is scaled by its layer weight. A row of zeros
    means "no style" for that sample (the identity row of a multi-style net): its style term is 0.
    """

    name = "style"

    def __init__(self, layers: Sequence[str], weight: float, layer_weights: Sequence[float] | None = None) -> None:
        super().__init__(weight, layers=layers)
        self.layer_weights = tuple(layer_weights or (1.0,) * len(self.layers))
        self.num_styles = 0

    @torch.no_grad()
    def set_styles(self, features: Sequence[Mapping[str, Tensor]]) -> None:
        for i, layer in enumerate(self.layers):
            grams = [gram_matrix(f[layer])[0] for f in features]
            self.register_buffer(f"gram_{i}", torch.stack(grams), persistent=False)
        self.num_styles = len(features)

    def targets(self, style_weights: Tensor) -> list[Tensor]:
        """Target Gram matrices (B, C, C) per layer for style weights (B, N)."""
        if style_weights is None or style_weights.ndim != 2 or style_weights.shape[1] != self.num_styles:
            got = None if style_weights is None else tuple(style_weights.shape)
            raise ValueError(f"style weights must be (B, {self.num_styles}); got {got}")
        w = style_weights.float()
        with torch.autocast(w.device.type, enabled=False):  # float32 targets, as gram_matrix's
            return [torch.einsum("bn,ncd->bcd", w, getattr(self, f"gram_{i}")) for i in range(len(self.layers))]

    def forward(self, inputs: LossInputs) -> Tensor:
        styled = inputs.style_weights.float().sum(1)  # (B,): 1 for a style or blend, 0 for none
        loss = inputs.image.new_zeros((), dtype=torch.float32)
        for layer, weight, target in zip(self.layers, self.layer_weights, self.targets(inputs.style_weights)):
            per_sample = (gram_matrix(inputs.features[layer]) - target).pow(2).mean(dim=(1, 2))
            loss = loss + weight * (per_sample * styled).mean()
        return self.weight * loss


class TotalVariationLoss(LossTerm):
    """Smoothness of the output: ``total_variation`` (0-255 units) times the weight."""

    name = "tv"

    def forward(self, inputs: LossInputs) -> Tensor:
        return self.weight * total_variation(inputs.image)


class LossTerms(Mapping[str, Tensor]):
    """Weighted loss terms (scalars) by name, in the order of the loss's terms; ``total`` is their sum."""

    def __init__(self, terms: Mapping[str, Tensor]) -> None:
        self._terms = dict(terms)
        values = list(self._terms.values())
        self.total: Tensor = sum(values[1:], values[0]) if values else torch.zeros(())

    def __getitem__(self, name: str) -> Tensor:
        return self._terms[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._terms)

    def __len__(self) -> int:
        return len(self._terms)

    def as_floats(self) -> dict[str, float]:
        """Every term and the total as Python floats (for tables, JSON and progress bars)."""
        return {**{k: float(v) for k, v in self._terms.items()}, "total": float(self.total)}


class PerceptualLoss(nn.Module):
    """The terms of a ``LossConfig`` (content, style, TV by default) on one shared VGG loss network.

    Style images are given once; terms cache their targets (Gram matrices). ``forward`` takes
    per-sample style weights (B, N) and returns ``LossTerms``.
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
        self.terms = nn.ModuleDict({term.name: term for term in config.terms()})
        self.vgg = loss_network or LossNetwork(self._layers(self.terms.values()), arch=config.arch,
                                               weights=weights)
        self.num_styles = 0
        if styles:
            self.set_styles(styles)

    @staticmethod
    def _layers(terms: Collection[LossTerm], *, content: bool = False) -> list[str]:
        """The VGG layers the terms read (of the content images with ``content``), each once, in order."""
        return list(dict.fromkeys(name for t in terms for name in (t.content_layers if content else t.layers)))

    @torch.no_grad()
    def set_styles(self, styles: Sequence[Tensor]) -> None:
        """Compute and cache the style targets of style images, each (1, 3, H, W) in [0, 1]."""
        layers = self._layers(self.terms.values())
        features = [self.vgg(image.to(self.vgg.mean.device), layers) for image in styles]
        for term in self.terms.values():
            term.set_styles(features)
        self.num_styles = len(styles)

    @torch.no_grad()
    def content_features(self, content: Tensor) -> dict[str, Tensor]:
        """Content targets: features at the content layers only (the net stops there)."""
        return self.vgg(content, self._layers(self.terms.values(), content=True))

    def forward(
        self, output: Tensor, style_weights: Tensor | None = None, *, content: Tensor | None = None,
        content_features: Mapping[str, Tensor] | None = None, use_content: bool = True,
    ) -> LossTerms:
        """Loss of ``output`` images against their content (images or cached features) and styles.

        With ``use_content=False`` the terms that compare with a content image are left out (texture
        synthesis).
        """
        terms = [t for t in self.terms.values() if use_content or not t.content_layers]
        if content_features is None and self._layers(terms, content=True):
            if content is None:
                raise ValueError("pass content images or content_features")
            content_features = self.content_features(content)
        layers = self._layers(terms)
        inputs = LossInputs(output, self.vgg(output, layers) if layers else {}, content_features or {},
                            style_weights)
        return LossTerms({t.name: t(inputs) for t in terms})
