"""Models giving scores (B, K) for attribution: a VGG layer's channels, a torchvision classifier
on [0, 1] images, or a region of a fast style net's output."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor, nn

from styletrain.errors import UserError
from styletrain.reference.layers import check_layer
from styletrain.transformer import TransformerNet
from styletrain.vgg import IMAGENET_MEAN, IMAGENET_STD, LossNetwork

log = logging.getLogger(__name__)


class LayerScores(nn.Module):
    """Per-channel scores of a loss-network layer: the spatial mean, or one unit at ``position``
    ((y, x) as fractions of the map, e.g. (0.5, 0.5) for the centre)."""

    def __init__(self, network: LossNetwork, layer: str, position: tuple[float, float] | None = None) -> None:
        super().__init__()
        check_layer(network, layer)
        self.network, self.layer, self.position = network, layer, position

    def forward(self, image: Tensor) -> Tensor:
        act = self.network(image, [self.layer])[self.layer]
        if self.position is None:
            return act.mean(dim=(2, 3))
        h, w = act.shape[-2:]
        return act[:, :, min(h - 1, int(self.position[0] * h)), min(w - 1, int(self.position[1] * w))]


class RegionScore(nn.Module):
    """Mean of a fast net's output over a box (left, top, right, bottom) in pixels: (B, 1)."""

    def __init__(self, net: TransformerNet, box: tuple[int, int, int, int],
                 style_weights: Tensor | None = None) -> None:
        super().__init__()
        left, top, right, bottom = box
        if not (0 <= left < right and 0 <= top < bottom):
            raise UserError(f"region must be LEFT,TOP,RIGHT,BOTTOM with left < right and top < bottom; got {box}")
        self.net, self.box, self.style_weights = net, box, style_weights

    def forward(self, image: Tensor) -> Tensor:
        left, top, right, bottom = self.box
        h, w = image.shape[-2:]
        if right > w or bottom > h:
            raise UserError(f"region {self.box} lies outside the {w}x{h} image")
        weights = None if self.style_weights is None else self.style_weights.expand(image.shape[0], -1)
        out = self.net(image, weights)
        return out[:, :, top:bottom, left:right].mean(dim=(1, 2, 3)).unsqueeze(1)


class Normalized(nn.Module):
    """A torchvision ImageNet classifier taking RGB in [0, 1], like everything in styletrain."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: Tensor) -> Tensor:
        return self.classifier((image - self.mean) / self.std)


def load_classifier(name: str, weights: str | Path) -> tuple[Normalized, list[str] | None]:
    """A torchvision classifier ``name`` (e.g. resnet18) with a local state dict, in eval mode, and
    its ImageNet category names when torchvision knows them (no download needed for the names)."""
    from torchvision import models

    if name not in models.list_models(module=models):
        raise UserError(f"unknown torchvision classifier {name!r}; e.g. resnet18, vgg16, mobilenet_v3_small")
    path = Path(weights)
    if not path.is_file():
        raise UserError(f"classifier weights not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        classifier = models.get_model(name, weights=None)
        classifier.load_state_dict(state)
    except Exception as exc:
        raise UserError(f"could not load {path} into torchvision's {name}: {exc}") from None
    try:
        categories = list(models.get_model_weights(name).DEFAULT.meta["categories"])
    except Exception:
        categories = None
    return Normalized(classifier.eval()).requires_grad_(False), categories


def class_index(target: str, categories: list[str] | None) -> int:
    """A class given by index ("281") or by ImageNet name ("tabby")."""
    if target.isdigit():
        return int(target)
    if categories and target in categories:
        return categories.index(target)
    raise UserError(f"unknown class {target!r}; give an index or an ImageNet category name")


def default_cam_layer(model: nn.Module, image: Tensor) -> str:
    """Name of the last module that produces a spatial map (B, C, H>1, W>1): the usual Grad-CAM layer."""
    seen: list[str] = []
    handles = []
    try:
        for name, module in model.named_modules():
            if name and not list(module.children()):
                handles.append(module.register_forward_hook(
                    lambda m, i, out, name=name: seen.append(name)
                    if isinstance(out, Tensor) and out.ndim == 4 and min(out.shape[-2:]) > 1 else None))
        with torch.no_grad():
            model(image)
    finally:
        for handle in handles:
            handle.remove()
    if not seen:
        raise UserError("the model has no layer with a spatial output for Grad-CAM")
    return seen[-1]
