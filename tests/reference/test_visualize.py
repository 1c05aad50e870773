"""Channel visualisation, the first-layer filter grid, and maximally activating patches."""

from __future__ import annotations

import pytest
import torch

from reference_support import needs_images, needs_vgg, one_thread, photo, weights_path  # noqa: F401
from styletrain.errors import UserError
from styletrain.reference.layers import layer_channels, receptive_field
from styletrain.reference.visualize import filter_grid, top_patches, visualize_channel
from styletrain.vgg import LossNetwork

pytestmark = [needs_vgg]


@pytest.fixture(scope="module")
def network():
    return LossNetwork(["relu2_2"], weights=weights_path())


def channel_mean(network, image, channel):
    with torch.no_grad():
        return float(network(image, ["relu2_2"])["relu2_2"][0, channel].mean())


def test_ascent_raises_the_channel(network) -> None:
    result = visualize_channel(network, "relu2_2", 5, size=(32, 32), steps=20)
    grey = torch.full((1, 3, 32, 32), 0.5)
    assert channel_mean(network, result.image, 5) > channel_mean(network, grey, 5) + 1.0
    assert result.image.shape == (1, 3, 32, 32)


def test_filter_grid_shows_all_64_filters(network) -> None:
    grid = filter_grid(network, zoom=4, nrow=8)
    tile = 3 * 4 + 2  # zoomed 3x3 filter plus padding
    assert grid.shape == (3, 8 * tile + 2, 8 * tile + 2)
    assert 0 <= grid.min() and grid.max() <= 1


@needs_images
def test_top_patches_rank_the_photos(network) -> None:
    photos = [(name, photo(48, name)) for name in ("amber.jpg", "chicago.jpg", "hoovertowernight.jpg")]
    (patches,) = top_patches(network, "relu2_2", [3], photos, top=2)
    scores = {name: float(network(image, ["relu2_2"])["relu2_2"][0, 3].max()) for name, image in photos}
    best = sorted(scores, key=scores.get, reverse=True)[:2]
    assert [p.source for p in patches] == best
    assert patches[0].score == pytest.approx(scores[best[0]], rel=1e-5)
    assert patches[0].image.shape == (1, 3, 14, 14)  # relu2_2 sees 14x14 pixels


def test_layer_facts(network) -> None:
    assert receptive_field("relu2_2") == (14, 2)
    assert receptive_field("relu5_3") == (196, 16)
    assert layer_channels(network, "relu2_2") == 128
    with pytest.raises(UserError, match="channel must be in 0..127"):
        visualize_channel(network, "relu2_2", 128, steps=1)
