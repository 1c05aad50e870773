"""DeepDream (Mordvintsev et al. 2015): amplify what a VGG layer or channel already sees in a photo.

Normalised gradient ascent on the layer's L2 norm, with random jitter, over an octave pyramid: the
small octaves grow large structures, the detail they add is carried up to the next octave.
"""

from __future__ import annotations

import torch
from torch import Tensor

from styletrain.errors import UserError
from styletrain.reference import objectives
from styletrain.reference.layers import check_layer
from styletrain.reference.optimize import Result, optimize
from styletrain.reference.param import resize, scaled_size
from styletrain.reference.transforms import jitter as jitter_transform
from styletrain.vgg import LossNetwork, WeightsSpec

MIN_OCTAVE_SIDE = 32


def deepdream(
    image: Tensor,
    layer: str = "relu4_3",
    *,
    channel: int | None = None,
    octaves: int = 3,
    octave_scale: float = 1.4,
    steps: int = 10,
    lr: float = 0.01,
    jitter: int = 16,
    network: LossNetwork | None = None,
    weights: WeightsSpec = None,
    seed: int = 0,
    progress: bool = False,
) -> Result:
    """Dream on ``image`` (1, 3, H, W) in [0, 1]: ``steps`` ascent steps per octave, smallest first.

    ``lr`` is the step in pixel units after dividing the gradient by its mean absolute value.
    """
    if octaves < 1 or octave_scale <= 1:
        raise UserError(f"need octaves >= 1 and octave scale > 1; got {octaves} and {octave_scale}")
    network = network or LossNetwork([layer], weights=weights)
    check_layer(network, layer, channel)
    size = tuple(image.shape[-2:])
    sizes = [scaled_size(size, round(max(size) / octave_scale**k)) for k in reversed(range(octaves))]
    sizes = [s for s in sizes if min(s) >= MIN_OCTAVE_SIDE] or [size]
    generator = torch.Generator().manual_seed(seed)
    objective = objectives.activation(network, layer, channel, power=2)
    device = network.mean.device
    image = image.to(device)
    detail = torch.zeros_like(resize(image, sizes[0]))
    result = None
    for octave_size in sizes:
        base = resize(image, octave_size)
        start = (base + resize(detail, octave_size)).clamp(0, 1)
        result = optimize(start, objective, steps=steps, method="ascent", lr=lr,
                          transforms=[jitter_transform(jitter, generator)], progress=progress,
                          desc=f"deepdream {octave_size[1]}x{octave_size[0]}")
        detail = result.image - base
    return result
