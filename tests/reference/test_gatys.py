"""Gatys style transfer and texture synthesis with the real VGG16 weights, at 32-48 px."""

from __future__ import annotations

import pytest
import torch

from reference_support import needs_images, needs_vgg, one_thread, photo, style, weights_path  # noqa: F401
from styletrain.errors import UserError
from styletrain.losses import gram_matrix
from styletrain.reference import color, gatys

pytestmark = [needs_vgg, needs_images]


@pytest.fixture(scope="module")
def loss():
    return gatys.perceptual_loss(weights=weights_path())


def test_total_loss_falls_tenfold(loss) -> None:
    content, mosaic = photo(48), style(64)
    start = gatys.stylize(content, [mosaic], loss=loss, steps=0).losses["total"]
    result = gatys.stylize(content, [mosaic], loss=loss, steps=15)
    assert result.losses["total"] * 10 <= start, (start, result.losses)
    assert result.image.shape == content.shape
    assert 0 <= result.image.min() and result.image.max() <= 1


def test_blend_of_zero_and_one_matches_the_single_style(loss) -> None:
    content, mosaic, udnie = photo(32), style(48), style(48, "udnie.jpg")
    single = gatys.stylize(content, [mosaic], loss=loss, steps=4)
    blended = gatys.stylize(content, [udnie, mosaic], style_weights=[0.0, 1.0], loss=loss, steps=4)
    other = gatys.stylize(content, [udnie], loss=loss, steps=4)
    assert torch.allclose(blended.image, single.image, atol=1e-4)
    assert blended.losses["total"] == pytest.approx(single.losses["total"], rel=1e-4)
    assert not torch.allclose(other.image, single.image, atol=1e-2)


def test_adam_and_noise_init_lower_the_loss(loss) -> None:
    content, mosaic = photo(32), style(48)
    start = gatys.stylize(content, [mosaic], loss=loss, steps=0, init="noise").losses["total"]
    result = gatys.stylize(content, [mosaic], loss=loss, steps=5, init="noise", optimizer="adam", lr=0.05)
    assert result.losses["total"] < start


def test_colour_preservation_keeps_the_photos_chroma(loss) -> None:
    content, mosaic = photo(32), style(48)
    content_iq = color.rgb_to_yiq(content)[:, 1:]

    def chroma_change(image):
        return float((color.rgb_to_yiq(image)[:, 1:] - content_iq).abs().mean())

    kept = chroma_change(gatys.stylize(content, [mosaic], loss=loss, steps=8, preserve_color=True).image)
    plain = chroma_change(gatys.stylize(content, [mosaic], loss=loss, steps=8).image)
    assert kept < 0.01  # exact up to the final clamp into [0, 1]
    assert plain > 3 * kept, (plain, kept)


def test_yiq_round_trip() -> None:
    image = torch.rand(1, 3, 5, 7)
    assert torch.allclose(color.yiq_to_rgb(color.rgb_to_yiq(image)), image, atol=1e-5)


def test_coarse_to_fine_returns_the_full_size(loss) -> None:
    content = photo(64)
    result = gatys.stylize(content, [style(48)], loss=loss, steps=1, scales=2)
    assert result.image.shape == content.shape
    with pytest.raises(UserError, match="use fewer scales or a larger size"):
        gatys.stylize(content, [style(48)], loss=loss, steps=1, scales=3)


def test_style_weights_are_checked(loss) -> None:
    with pytest.raises(UserError, match=r"one style weight per style image \(1\); got 2"):
        gatys.stylize(photo(32), [style(32)], style_weights=[1, 2], loss=loss, steps=0)
    with pytest.raises(UserError, match="non-negative and sum to more than 0"):
        gatys.blend_weights(2, [-1.0, 1.0])
    assert torch.allclose(gatys.blend_weights(2, [3, 1]), torch.tensor([[0.75, 0.25]]))


def test_texture_gram_distance_falls_at_any_size(loss) -> None:
    mosaic = style(64)
    size = (40, 56)

    def gram_distance(image):
        layers = loss.config.style_layers
        with torch.no_grad():
            a, b = loss.vgg(image, layers), loss.vgg(mosaic, layers)
        return sum(float((gram_matrix(a[k]) - gram_matrix(b[k])).pow(2).sum()) for k in layers)

    start = gatys.synthesize([mosaic], size, loss=loss, steps=0, style_size=64)
    result = gatys.synthesize([mosaic], size, loss=loss, steps=10, style_size=64)
    assert result.image.shape == (1, 3, *size)
    assert gram_distance(result.image) < 0.2 * gram_distance(start.image)
    assert result.losses["style"] < 0.2 * start.losses["style"]
