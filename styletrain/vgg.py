"""The frozen VGG loss network: named layer activations of an ImageNet VGG16/VGG19.

Images everywhere in styletrain are float RGB in [0, 1]; the ImageNet normalisation lives here and
nowhere else, so training, the reference optimisers and the diagnostics cannot disagree.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.models import vgg as tv_vgg

from styletrain.errors import UserError
from styletrain.files import torch_load_error

log = logging.getLogger(__name__)

WEIGHTS_ENV = "STYLETRAIN_VGG_WEIGHTS"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# torchvision's layer configurations ("D" is VGG16, "E" is VGG19).
_CONFIGS = {"vgg16": tv_vgg.cfgs["D"], "vgg19": tv_vgg.cfgs["E"]}
_TORCHVISION_WEIGHTS = {
    "vgg16": tv_vgg.VGG16_Weights.IMAGENET1K_V1,
    "vgg19": tv_vgg.VGG19_Weights.IMAGENET1K_V1,
}

WeightsSpec = str | Path | None
"""``None``: the ``STYLETRAIN_VGG_WEIGHTS`` file if set, else torchvision's ImageNet weights;
``"imagenet"``: torchvision's ``IMAGENET1K_V1`` (downloaded once, needs internet);
a path: a torchvision VGG state dict, full or features-only (float16 copies are fine);
``"random"``: random initialisation, only for tests and only when asked for explicitly."""


def layer_names(arch: str = "vgg16") -> list[str]:
    """Names of the modules of ``vgg.features`` in order: conv1_1, relu1_1, ..., pool5."""
    names, block, index = [], 1, 1
    for item in _config(arch):
        if item == "M":
            names.append(f"pool{block}")
            block, index = block + 1, 1
        else:
            names += [f"conv{block}_{index}", f"relu{block}_{index}"]
            index += 1
    return names


def check_layers(layers: Iterable[str], arch: str = "vgg16") -> tuple[str, ...]:
    """The layer names, each once and in order; a ``UserError`` naming the choices for unknown ones.

    The one place layer names are validated: the loss network, the reference tools and the CLI.
    """
    names = layer_names(arch)
    layers = tuple(dict.fromkeys(layers))
    unknown = [name for name in layers if name not in names]
    if unknown or not layers:
        raise UserError(f"unknown {arch} layer(s) {unknown}; choose from {names}")
    return layers


def _config(arch: str) -> list:
    if arch not in _CONFIGS:
        raise UserError(f"unknown VGG architecture {arch!r}; choose one of {sorted(_CONFIGS)}")
    return _CONFIGS[arch]


def _make_features(arch: str, pooling: str) -> nn.Sequential:
    if pooling not in ("max", "avg"):
        raise UserError(f"pooling must be 'max' or 'avg'; got {pooling!r}")
    features = tv_vgg.make_layers(_config(arch), batch_norm=False)
    for i, module in enumerate(features):
        if isinstance(module, nn.ReLU):
            features[i] = nn.ReLU(inplace=False)  # keep every named activation intact
        elif isinstance(module, nn.MaxPool2d) and pooling == "avg":
            features[i] = nn.AvgPool2d(kernel_size=2, stride=2)
    return features


def _features_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Accept a full torchvision VGG state dict or a features-only one (with or without prefix)."""
    if any(k.startswith("features.") for k in state):
        state = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
    return {k: v.float() for k, v in state.items()}


_PASS_WEIGHTS = ("pass --vgg-weights a {arch} state_dict saved with torch.save (of torchvision's {arch}() or "
                 "{arch}().features: keys features.0.weight ... or 0.weight ...), or leave it out for torchvision's "
                 "ImageNet weights")
"""The fix for a --vgg-weights file that is not VGG weights (``WeightsSpec`` lists what is accepted)."""


def _is_state_dict(loaded: object) -> bool:
    """Whether ``torch.load`` gave a flat name -> tensor dict (not, say, a styletrain checkpoint)."""
    return isinstance(loaded, dict) and bool(loaded) and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in loaded.items())


def resolve_weights(weights: WeightsSpec) -> str | Path:
    """Apply the default: the environment variable's file if set, else torchvision's weights."""
    if weights is None:
        return os.environ.get(WEIGHTS_ENV) or "imagenet"
    return weights


def load_features(
    arch: str = "vgg16", *, weights: WeightsSpec = None, pooling: str = "max", upto: int | None = None
) -> nn.Sequential:
    """Build ``vgg.features`` (modules ``[0, upto)``) and load ImageNet weights into it.

    Raises ``UserError`` telling how to supply a weights file when none can be had: styletrain never
    falls back to random weights silently, because training against them gives meaningless nets.
    """
    features = _make_features(arch, pooling)
    upto = len(features) if upto is None else upto
    spec = resolve_weights(weights)
    if spec == "random":
        log.warning("using a randomly initialised %s: perceptual losses will be meaningless", arch)
        return features[:upto]
    if spec == "imagenet":
        try:
            model = getattr(tv_vgg, arch)(weights=_TORCHVISION_WEIGHTS[arch])
        except Exception as exc:  # any download or cache failure
            raise UserError(
                f"could not get torchvision's ImageNet {arch} weights ({exc.__class__.__name__}: {exc}); "
                f"pass a weights file with --vgg-weights PATH or set {WEIGHTS_ENV}=PATH"
            ) from None
        state = _features_state_dict(model.state_dict())
    else:
        path = Path(spec)
        if not path.is_file():
            raise UserError(
                f"VGG weights file not found: {path}; pass an existing file with --vgg-weights "
                f"or {WEIGHTS_ENV}"
            )
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise torch_load_error(path, exc, "VGG weights", _PASS_WEIGHTS.format(arch=arch)) from None
        if not _is_state_dict(loaded):
            what = "a styletrain checkpoint, not" if isinstance(loaded, dict) and "styletrain" in loaded else "not"
            raise UserError(f"{path} is {what} a {arch.upper()} features state_dict: {_PASS_WEIGHTS.format(arch=arch)}")
        state = _features_state_dict(loaded)
    features = features[:upto]
    missing = [k for k in features.state_dict() if k not in state]
    if missing:
        raise UserError(
            f"VGG weights in {spec} lack {len(missing)} tensors needed up to layer "
            f"{layer_names(arch)[upto - 1]} (first: {missing[0]}); use a complete {arch} weights file"
        )
    features.load_state_dict({k: state[k] for k in features.state_dict()})
    return features


class LossNetwork(nn.Module):
    """Frozen VGG returning the activations of named layers for images in [0, 1].

    The network is truncated after the deepest layer asked for at construction; ``forward`` may ask
    for a subset of those layers and then stops as early as it can (e.g. content features only as
    deep as the content layer).
    """

    def __init__(
        self,
        layers: Iterable[str],
        *,
        arch: str = "vgg16",
        weights: WeightsSpec = None,
        pooling: str = "max",
    ) -> None:
        super().__init__()
        self.layers = check_layers(layers, arch)
        names = layer_names(arch)
        self.arch = arch
        self._index = {name: names.index(name) for name in self.layers}
        self._names = names
        self.features = load_features(
            arch, weights=weights, pooling=pooling, upto=max(self._index.values()) + 1
        )
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LossNetwork:
        """Stay in eval mode: the loss network is frozen."""
        return super().train(False)

    def module(self, name: str) -> nn.Module:
        """The module producing layer ``name`` (for hooks in the diagnostics)."""
        return self.features[self._names.index(name)]

    def forward(self, image: Tensor, layers: Sequence[str] | None = None) -> dict[str, Tensor]:
        wanted = self.layers if layers is None else tuple(layers)
        missing = [name for name in wanted if name not in self._index]
        if missing:
            raise ValueError(f"layers {missing} were not requested when building this LossNetwork")
        stop = max(self._index[name] for name in wanted)
        targets = {self._index[name]: name for name in wanted}
        out: dict[str, Tensor] = {}
        x = (image - self.mean) / self.std
        for i, module in enumerate(self.features[: stop + 1]):
            x = module(x)
            if i in targets:
                out[targets[i]] = x
        return out
