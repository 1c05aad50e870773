"""Facts about the loss network's named layers: channel counts, receptive fields, validation."""

from __future__ import annotations

from torch import nn

from styletrain.errors import UserError
from styletrain.vgg import LossNetwork, check_layers, layer_names


def check_layer(network: LossNetwork, layer: str, channel: int | None = None) -> None:
    """Raise a ``UserError`` naming the choices when ``layer`` or ``channel`` does not exist."""
    check_layers([layer], network.arch)
    if layer not in network.layers:
        raise ValueError(f"layer {layer!r} was not requested when building this LossNetwork {network.layers}")
    if channel is not None:
        count = layer_channels(network, layer)
        if not 0 <= channel < count:
            raise UserError(f"channel must be in 0..{count - 1} for {layer}; got {channel}")


def layer_channels(network: LossNetwork, layer: str) -> int:
    """Channel count of ``layer``: that of the last convolution at or before it."""
    index = layer_names(network.arch).index(layer)
    convs = [m for m in network.features[: index + 1] if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


def receptive_field(layer: str, arch: str = "vgg16") -> tuple[int, int]:
    """(size, stride) in input pixels of one unit of ``layer`` (3x3 convs, 2x2 pools)."""
    size, stride = 1, 1
    for name in layer_names(arch)[: layer_names(arch).index(layer) + 1]:
        if name.startswith("conv"):
            size += 2 * stride
        elif name.startswith("pool"):
            size += stride
            stride *= 2
    return size, stride
