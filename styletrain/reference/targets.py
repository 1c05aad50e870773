"""Models giving scores (B, K) for attribution: a VGG layer's channels, a torchvision classifier
on [0, 1] images, or a region of a fast style net's output.

``vgg_channel``, ``classifier_class`` and ``fast_net_region`` build an ``AttributionTarget`` (the
model, the score explained and the Grad-CAM layer) for one image, with the usual defaults.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from styletrain.errors import UserError
from styletrain.reference.layers import check_layer
from styletrain.transformer import TransformerNet
from styletrain.vgg import IMAGENET_MEAN, IMAGENET_STD, LossNetwork, WeightsSpec, check_layers, layer_names

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


@dataclass
class AttributionTarget:
    """What an attribution explains: column ``index`` of ``model``'s scores (B, K), with ``layer`` for
    Grad-CAM; ``box`` is the explained region of a fast net's output, if that is the target."""

    model: nn.Module
    index: int
    layer: nn.Module
    description: str
    box: tuple[int, int, int, int] | None = None


def vgg_channel(image: Tensor, layer: str, *, channel: int | None = None, unit: Sequence[float] | None = None,
                cam_layer: str | None = None, weights: WeightsSpec = None) -> AttributionTarget:
    """A channel of a VGG layer (default: the one most active on ``image``), its mean or the unit at
    ``unit`` = (y, x) fractions of the map; Grad-CAM at ``cam_layer`` (default: ``layer`` itself)."""
    cam = cam_layer or layer
    check_layers([layer, cam])
    names = layer_names()
    if names.index(cam) > names.index(layer):
        raise UserError(f"cam layer {cam} lies after the target layer {layer}; choose an earlier one")
    if unit is not None and (len(unit) != 2 or not all(0 <= v <= 1 for v in unit)):
        raise UserError(f"unit needs two fractions FY,FX in [0, 1]; got {list(unit)}")
    network = LossNetwork([layer, cam], weights=weights).to(image.device)
    model = LayerScores(network, layer, tuple(unit) if unit is not None else None)
    description = f"{layer} channel {channel}"
    if channel is None:
        with torch.no_grad():
            channel = int(model(image)[0].argmax())
        description = f"{layer} channel {channel} (the most active)"
    return AttributionTarget(model, channel, network.module(cam), description)


def classifier_class(image: Tensor, name: str, weights: str | Path, *, target_class: str | None = None,
                     cam_layer: str | None = None) -> AttributionTarget:
    """A class (index or ImageNet name; default: the top prediction for ``image``) of torchvision's
    classifier ``name``; Grad-CAM at module ``cam_layer`` (default: the last spatial layer)."""
    model, categories = load_classifier(name, weights)
    model.to(image.device)
    if target_class is None:
        with torch.no_grad():
            index = int(model(image)[0].argmax())
    else:
        index = class_index(target_class, categories)
    label = categories[index] if categories and index < len(categories) else str(index)
    module = cam_layer or default_cam_layer(model.classifier, image)
    try:
        layer = model.classifier.get_submodule(module)
    except AttributeError:
        raise UserError(f"{name} has no module {module!r} for the cam layer") from None
    return AttributionTarget(model, index, layer, f"class {index} ({label})")


def fast_net_region(image: Tensor, checkpoint: str | Path, *, style: str | None = None,
                    region: Sequence[int] | None = None, cam_layer: str | None = None) -> AttributionTarget:
    """The mean output of a checkpoint's fast net over ``region`` (LEFT, TOP, RIGHT, BOTTOM; default:
    the central quarter of ``image``) in ``style``; Grad-CAM at module ``cam_layer`` (default: the
    last residual block)."""
    from styletrain.checkpoint import load_transformer
    from styletrain.styles import style_weights

    net, meta = load_transformer(checkpoint)
    net.to(image.device)
    weights = torch.from_numpy(style_weights(meta.style_names, style=style)).unsqueeze(0).to(image.device)
    h, w = image.shape[-2:]
    box = list(region) if region is not None else [w // 4, h // 4, 3 * w // 4, 3 * h // 4]
    if len(box) != 4:
        raise UserError(f"region needs four numbers LEFT,TOP,RIGHT,BOTTOM; got {box}")
    if box[2] > w or box[3] > h:
        raise UserError(f"region {box} lies outside the {w}x{h} input")
    model = RegionScore(net.requires_grad_(False), tuple(box), weights)
    module = cam_layer or net.last_residual
    try:
        layer = net.get_submodule(module)
    except AttributeError:
        raise UserError(f"the fast net has no module {module!r} for the cam layer") from None
    name = style or meta.style_names[0]
    return AttributionTarget(model, 0, layer, f"the {name} output over region {box}", box=tuple(box))
