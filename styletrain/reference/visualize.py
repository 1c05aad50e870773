"""What a VGG channel responds to: regularised gradient ascent (Yosinski et al. 2015), the
first-layer filters, and the photo patches that excite a channel most.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.utils import make_grid

from styletrain.errors import UserError
from styletrain.reference import objectives
from styletrain.reference.layers import check_layer, receptive_field
from styletrain.reference.optimize import Result, optimize
from styletrain.reference.param import check_side, noise_image
from styletrain.reference.transforms import blur_every as blur_regulariser
from styletrain.reference.transforms import clip_small_norm, decay as decay_regulariser, jitter as jitter_transform
from styletrain.vgg import LossNetwork

log = logging.getLogger(__name__)


def visualize_channel(
    network: LossNetwork,
    layer: str,
    channel: int,
    *,
    size: tuple[int, int] = (128, 128),
    centre_unit: bool = False,
    steps: int = 100,
    lr: float = 0.02,
    decay: float = 1e-3,
    blur_every: int = 4,
    blur_sigma: float = 0.5,
    clip_percentile: float = 10.0,
    jitter: int = 4,
    seed: int = 0,
    progress: bool = False,
) -> Result:
    """An image (1, 3, *size*) maximising a channel's mean activation (or its centre unit's).

    Normalised gradient ascent from faint noise with Yosinski et al.'s regularisers: L2 decay towards
    grey, a Gaussian blur every few steps, and resetting the weakest pixels to grey; plus jitter.
    """
    check_layer(network, layer, channel)
    check_side(max(size), "the channel image")
    generator = torch.Generator().manual_seed(seed)
    start = noise_image(size, generator=generator, scale=0.05, like=network.mean)
    objective = objectives.activation(network, layer, channel, (0.5, 0.5) if centre_unit else None, power=1)
    return optimize(
        start, objective, steps=steps, method="ascent", lr=lr,
        transforms=[jitter_transform(jitter, generator)],
        regularisers=[decay_regulariser(decay), blur_regulariser(blur_every, blur_sigma),
                      clip_small_norm(clip_percentile)],
        progress=progress, desc=f"visualize {layer}:{channel}",
    )


def filter_grid(network: LossNetwork, *, zoom: int = 8, nrow: int = 8) -> Tensor:
    """The first convolution's filters as a grid of colour patches (3, H, W) in [0, 1].

    Each filter is scaled by its own largest weight around mid-grey, so its sign pattern shows.
    The filters act on ImageNet-normalised RGB (the normalisation lives in ``LossNetwork``).
    """
    conv = network.features[0]
    weight = conv.weight.detach().float().cpu()
    scaled = 0.5 + 0.5 * weight / weight.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
    tiles = torch.repeat_interleave(torch.repeat_interleave(scaled, zoom, dim=2), zoom, dim=3)
    return make_grid(tiles, nrow=nrow, padding=2, pad_value=1.0)


@dataclass
class Patch:
    """A crop of a photo around the unit where a channel fired most, and where it came from."""

    source: str
    score: float
    box: tuple[int, int, int, int]
    """(left, top, right, bottom) in the photo as it was scored."""
    image: Tensor


@torch.no_grad()
def top_patches(network: LossNetwork, layer: str, channels: Sequence[int], photos: Iterable[tuple[str, Tensor]],
                *, top: int = 16) -> list[list[Patch]]:
    """Per channel, the ``top`` patches (one per photo, at its strongest unit) that excite it most.

    One pass over the photos serves every channel. A patch is the unit's receptive field, clipped to
    the photo and padded with grey to full size.
    """
    for channel in channels:
        check_layer(network, layer, channel)
    if top < 1:
        raise UserError(f"top must be at least 1; got {top}")
    field, stride = receptive_field(layer, network.arch)
    device = network.mean.device
    found: list[list[Patch]] = [[] for _ in channels]
    for source, photo in photos:
        act = network(photo.to(device), [layer])[layer][0]
        for k, channel in enumerate(channels):
            score, flat = act[channel].flatten().max(0)
            y, x = divmod(int(flat), act.shape[-1])
            found[k].append(Patch(source, float(score), *_crop(photo, y, x, field, stride)))
            found[k] = sorted(found[k], key=lambda p: -p.score)[:top]
    if not found or not found[0]:
        raise UserError("no photos to score")
    return found


def _crop(photo: Tensor, y: int, x: int, field: int, stride: int) -> tuple[tuple[int, int, int, int], Tensor]:
    """The receptive field of unit (y, x) in ``photo``: its box, and the crop padded with grey."""
    # unit (y, x) sees the pixels centred on (y * stride + (stride - 1) / 2), ``field`` wide
    left = x * stride + (stride - 1) // 2 - field // 2
    top = y * stride + (stride - 1) // 2 - field // 2
    box = (max(0, left), max(0, top), min(photo.shape[-1], left + field), min(photo.shape[-2], top + field))
    crop = torch.full((1, 3, field, field), 0.5)
    crop[..., box[1] - top: box[3] - top, box[0] - left: box[2] - left] = photo[..., box[1]:box[3], box[0]:box[2]].cpu()
    return box, crop
