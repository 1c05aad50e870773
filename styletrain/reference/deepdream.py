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
from styletrain.reference.param import resize
from styletrain.reference.pyramid import ImagePyramid
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
    pyramid = ImagePyramid(octaves, octave_scale, min_side=MIN_OCTAVE_SIDE, skip_small=True)
    generator = torch.Generator().manual_seed(seed)
    objective = objectives.activation(network, layer, channel, power=2)
    image = image.to(network.mean.device)

    def octave(size: tuple[int, int], previous: Tensor | None) -> Result:
        base = resize(image, size)
        if previous is not None:  # carry up the detail the smaller octave added to its base
            base = base + resize(previous - resize(image, tuple(previous.shape[-2:])), size)
        return optimize(base.clamp(0, 1), objective, steps=steps, method="ascent", lr=lr,
                        transforms=[jitter_transform(jitter, generator)], progress=progress,
                        desc=f"deepdream {size[1]}x{size[0]}")

    return pyramid.run(tuple(image.shape[-2:]), octave)
