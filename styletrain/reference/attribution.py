"""Which input pixels drive a score: saliency, guided backprop, Grad-CAM and occlusion.

Captum's shape: one class per method, built with the model (and a layer for Grad-CAM), and one
``attribute(inputs, target=...)`` call. The model maps images (B, 3, H, W) to scores (B, K) and
``target`` picks the column (``styletrain.reference.targets`` wraps VGG channels, classifiers and
regions of a fast net's output in this form). Every hook is removed in ``finally``, so a model
shared with training is never left changed, even after an error.

Output shapes: guided backprop returns the input-shaped gradient (B, 3, H, W); the per-pixel maps
(saliency, Grad-CAM, occlusion) return (B, 1, H, W) at the input's size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from styletrain.errors import UserError

log = logging.getLogger(__name__)


def _score(model: nn.Module, inputs: Tensor, target: int | None) -> Tensor:
    """The (B,) scores of column ``target`` of ``model(inputs)`` (any column if there is only one)."""
    out = model(inputs)
    if out.ndim != 2:
        raise ValueError(f"the model must return scores (B, K); got shape {tuple(out.shape)}")
    if target is None:
        if out.shape[1] != 1:
            raise UserError(f"the model gives {out.shape[1]} scores; choose one with target=0..{out.shape[1] - 1}")
        target = 0
    if not 0 <= target < out.shape[1]:
        raise UserError(f"target must be in 0..{out.shape[1] - 1}; got {target}")
    return out[:, target]


def _input_gradient(model: nn.Module, inputs: Tensor, target: int | None) -> Tensor:
    x = inputs.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(_score(model, x, target).sum(), x)
    return grad


class Saliency:
    """Vanilla gradient saliency (Simonyan et al. 2014): max over colour of |d score / d pixel|."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def attribute(self, inputs: Tensor, target: int | None = None) -> Tensor:
        return _input_gradient(self.model, inputs, target).abs().amax(dim=1, keepdim=True)


class _GuidedReLUGrad(torch.autograd.Function):
    """Identity forward; backward passes only positive gradients (applied after a ReLU's output)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad.clamp(min=0)


class GuidedBackprop:
    """Guided backpropagation (Springenberg et al. 2015): at every ReLU only positive gradients
    flow back, and only where the ReLU's input was positive.

    Implemented with forward hooks on the model's ``nn.ReLU`` modules (inplace or not, reused or not);
    ReLUs called as functions (``F.relu``) are not seen, and for those the plain gradient flows.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def attribute(self, inputs: Tensor, target: int | None = None) -> Tensor:
        relus = [m for m in self.model.modules() if isinstance(m, nn.ReLU)]
        if not relus:
            log.warning("%s has no nn.ReLU modules: guided backprop gives the plain gradient",
                        type(self.model).__name__)
        handles = []
        try:
            for relu in relus:
                handles.append(relu.register_forward_hook(lambda m, i, out: _GuidedReLUGrad.apply(out)))
            return _input_gradient(self.model, inputs, target)
        finally:
            for handle in handles:
                handle.remove()


class GradCAM:
    """Grad-CAM (Selvaraju et al. 2017): ReLU of the layer's activations weighted by their mean
    gradients, upsampled bilinearly to the input size (B, 1, H, W), non-negative.

    Departure from the paper: the map is not normalised; divide by its maximum to display it.
    """

    def __init__(self, model: nn.Module, layer: nn.Module) -> None:
        self.model = model
        self.layer = layer

    def attribute(self, inputs: Tensor, target: int | None = None) -> Tensor:
        captured: list[Tensor] = []
        handle = self.layer.register_forward_hook(lambda m, i, out: captured.append(out))
        try:
            with torch.enable_grad():
                x = inputs.detach().clone().requires_grad_(True)  # so the layer's output needs grad
                score = _score(self.model, x, target)
                if not captured:
                    raise ValueError("the Grad-CAM layer was not called by the model's forward")
                act = captured[-1]
                if act.ndim != 4:
                    raise UserError(f"Grad-CAM needs a layer with (B, C, H, W) output; got {tuple(act.shape)}")
                (grad,) = torch.autograd.grad(score.sum(), act)
        finally:
            handle.remove()
        cam = F.relu((grad.mean(dim=(2, 3), keepdim=True) * act).sum(dim=1, keepdim=True)).detach()
        return F.interpolate(cam, size=inputs.shape[-2:], mode="bilinear", align_corners=False).clamp_min(0)


class Occlusion:
    """Occlusion sensitivity (Zeiler & Fergus 2014): how much the score drops when a ``window`` of
    the image (moved by ``stride`` pixels) is replaced by ``baseline``, averaged over the windows
    covering each pixel (B, 1, H, W). Departure from captum: the window is set at construction."""

    def __init__(self, model: nn.Module, *, window: int = 16, stride: int = 8, baseline: float = 0.5,
                 batch_size: int = 16) -> None:
        if window < 1 or stride < 1:
            raise UserError(f"occlusion window and stride must be positive; got {window} and {stride}")
        self.model = model
        self.window, self.stride, self.baseline, self.batch_size = window, stride, baseline, batch_size

    @torch.no_grad()
    def attribute(self, inputs: Tensor, target: int | None = None) -> Tensor:
        b, _, h, w = inputs.shape
        window, stride, batch_size = self.window, self.stride, self.batch_size
        base = _score(self.model, inputs, target)
        ys = list(range(0, max(1, h - window) + 1, stride))
        xs = list(range(0, max(1, w - window) + 1, stride))
        if ys[-1] + window < h:
            ys.append(h - window)
        if xs[-1] + window < w:
            xs.append(w - window)
        boxes = [(y, x) for y in ys for x in xs]
        total = inputs.new_zeros(b, 1, h, w)
        count = inputs.new_zeros(1, 1, h, w)
        for start in range(0, len(boxes), batch_size):
            chunk = boxes[start:start + batch_size]
            batch = inputs.repeat(len(chunk), 1, 1, 1)  # (len(chunk) * B, 3, H, W), box-major
            for k, (y, x) in enumerate(chunk):
                batch[k * b:(k + 1) * b, :, y:y + window, x:x + window] = self.baseline
            drop = base.repeat(len(chunk)) - _score(self.model, batch, target)
            for k, (y, x) in enumerate(chunk):
                total[:, :, y:y + window, x:x + window] += drop[k * b:(k + 1) * b].view(b, 1, 1, 1)
                count[:, :, y:y + window, x:x + window] += 1
        return total / count.clamp_min(1)


Method = Callable[..., "Saliency | GuidedBackprop | GradCAM | Occlusion"]

METHODS: dict[str, Method] = {
    "saliency": lambda model, layer, **settings: Saliency(model),
    "guided": lambda model, layer, **settings: GuidedBackprop(model),
    "gradcam": lambda model, layer, **settings: GradCAM(model, layer),
    "occlusion": lambda model, layer, **settings: Occlusion(model, **settings),
}
"""``METHODS[name](model, layer, window=..., stride=...)`` builds method ``name``; each takes what it
uses (Grad-CAM the layer, occlusion the window settings) and ignores the rest."""
