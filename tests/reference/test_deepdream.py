"""DeepDream raises the chosen layer's (or channel's) activation norm."""

from __future__ import annotations

import pytest
import torch

from reference_support import needs_images, needs_vgg, one_thread, photo, weights_path  # noqa: F401
from styletrain.errors import UserError
from styletrain.reference.deepdream import deepdream
from styletrain.vgg import LossNetwork

pytestmark = [needs_vgg, needs_images]


@pytest.fixture(scope="module")
def network():
    return LossNetwork(["relu3_3"], weights=weights_path())


def norm(network, image, channel=None):
    with torch.no_grad():
        act = network(image, ["relu3_3"])["relu3_3"]
    return float((act if channel is None else act[:, channel]).pow(2).mean())


def test_layer_norm_rises(network) -> None:
    image = photo(48)
    result = deepdream(image, "relu3_3", network=network, octaves=2, steps=4, jitter=4)
    assert result.image.shape == image.shape
    assert 0 <= result.image.min() and result.image.max() <= 1
    assert norm(network, result.image) > 1.5 * norm(network, image)


def test_channel_norm_rises_more_than_the_rest(network) -> None:
    image = photo(48)
    result = deepdream(image, "relu3_3", channel=7, network=network, octaves=1, steps=5, jitter=0)
    assert norm(network, result.image, 7) > 2 * norm(network, image, 7)
    gain_7 = norm(network, result.image, 7) / norm(network, image, 7)
    assert gain_7 > norm(network, result.image) / norm(network, image)


def test_bad_choices_are_user_errors(network) -> None:
    with pytest.raises(UserError, match="channel must be in 0..255 for relu3_3; got 256"):
        deepdream(photo(32), "relu3_3", channel=256, network=network)
    with pytest.raises(UserError, match=r"unknown vgg16 layer\(s\) \['relu9_9'\]"):
        deepdream(photo(32), "relu9_9", network=network)
    with pytest.raises(UserError, match="octave scale > 1"):
        deepdream(photo(32), "relu3_3", octave_scale=1.0, network=network)
