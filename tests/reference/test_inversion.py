"""Feature inversion lowers the distance to the photo's code; shallow layers keep more."""

from __future__ import annotations

import pytest
import torch

from reference_support import needs_images, needs_vgg, one_thread, photo, weights_path  # noqa: F401
from styletrain.reference.inversion import invert, invert_layers
from styletrain.reference.objectives import feature_distance, tv_beta
from styletrain.reference.param import noise_image
from styletrain.vgg import LossNetwork

pytestmark = [needs_vgg, needs_images]


@pytest.fixture(scope="module")
def network():
    return LossNetwork(["relu2_2", "relu3_3"], weights=weights_path())


def test_inversion_lowers_the_feature_distance(network) -> None:
    image = photo(32)
    with torch.no_grad():
        target = network(image, ["relu3_3"])["relu3_3"]
    start = noise_image(tuple(image.shape[-2:]), generator=torch.Generator().manual_seed(0))
    result = invert(image, "relu3_3", network=network, steps=15)
    assert feature_distance(network, "relu3_3", result.image, target) < 0.3 * feature_distance(
        network, "relu3_3", start, target)


def test_shallow_layers_reconstruct_the_pixels_better(network) -> None:
    image = photo(32)
    shallow, deep = invert_layers(image, ["relu2_2", "relu3_3"], network=network, steps=15)
    assert (shallow.image - image).abs().mean() < (deep.image - image).abs().mean()


def test_tv_beta_of_a_ramp() -> None:
    ramp = torch.linspace(0, 1, 5).view(1, 1, 1, 5).expand(1, 1, 5, 5)
    # every horizontal step is 0.25 and vertical steps are 0: (0.25^2)^(beta/2)
    assert float(tv_beta(ramp, 2.0)) == pytest.approx(0.0625, rel=1e-4)
    assert float(tv_beta(ramp, 1.0)) == pytest.approx(0.25, rel=1e-3)
