"""Feature inversion (Mahendran & Vedaldi 2015): which image has this photo's code at a layer?

Inverting several layers of one photo shows what each keeps: early layers keep nearly every pixel,
deep ones only the parts and their rough arrangement.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from styletrain.errors import UserError
from styletrain.reference import objectives
from styletrain.reference.layers import check_layer
from styletrain.reference.optimize import Result, optimize
from styletrain.reference.param import noise_image
from styletrain.vgg import LossNetwork, WeightsSpec


def invert(
    image: Tensor,
    layer: str,
    *,
    steps: int = 200,
    optimizer: str = "lbfgs",
    lr: float | None = None,
    alpha: float = 6.0,
    alpha_weight: float = 1e-4,
    beta: float = 2.0,
    tv_weight: float = 0.05,
    network: LossNetwork | None = None,
    weights: WeightsSpec = None,
    seed: int = 0,
    progress: bool = False,
) -> Result:
    """Reconstruct ``image`` (1, 3, H, W) in [0, 1] from its ``layer`` code, starting from noise."""
    network = network or LossNetwork([layer], weights=weights)
    check_layer(network, layer)
    device = network.mean.device
    image = image.to(device)
    with torch.no_grad():
        target = network(image, [layer])[layer].float()
    objective = objectives.feature_inversion(network, layer, target, alpha=alpha, alpha_weight=alpha_weight,
                                             beta=beta, tv_weight=tv_weight)
    start = noise_image(tuple(image.shape[-2:]), generator=torch.Generator().manual_seed(seed), like=image)
    return optimize(start, objective, steps=steps, method=optimizer, lr=lr, progress=progress,
                    desc=f"invert {layer}")


def invert_layers(image: Tensor, layers: Sequence[str], *, network: LossNetwork | None = None,
                  weights: WeightsSpec = None, **kwargs) -> list[Result]:
    """``invert`` at each layer with one shared loss network (for a row showing what each keeps)."""
    if not layers:
        raise UserError("give at least one layer to invert")
    network = network or LossNetwork(layers, weights=weights)
    return [invert(image, layer, network=network, **kwargs) for layer in layers]
