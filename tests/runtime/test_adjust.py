"""Adjustments after inference: colour preservation and the pixel-blend strength."""

import numpy as np

from styletrain.runtime.adjust import RGB_TO_YIQ, blend_pixels, finish, preserve_color


def yiq(image: np.ndarray) -> np.ndarray:
    return np.einsum("ij,bjhw->bihw", RGB_TO_YIQ, image)


def test_preserve_color_keeps_the_photos_colour_and_the_styles_luminance():
    rng = np.random.default_rng(0)
    content = 0.25 + 0.5 * rng.random((1, 3, 8, 9), dtype=np.float32)  # away from 0/1: no clipping
    stylized = np.repeat(0.3 + 0.4 * rng.random((1, 1, 8, 9), dtype=np.float32), 3, axis=1)  # grey strokes
    kept = preserve_color(stylized, content)
    np.testing.assert_allclose(yiq(kept)[:, 0], yiq(stylized)[:, 0], atol=2e-3)
    np.testing.assert_allclose(yiq(kept)[:, 1:], yiq(content)[:, 1:], atol=2e-3)
    assert kept.min() >= 0 and kept.max() <= 1


def test_strength_by_pixel_blend_and_no_change_by_default():
    content, stylized = np.zeros((1, 3, 4, 4), np.float32), np.ones((1, 3, 4, 4), np.float32)
    np.testing.assert_allclose(blend_pixels(stylized, content, 0.25), 0.25)
    np.testing.assert_array_equal(finish(stylized, content, strength=0.25, strength_method="pixel"), 0.25)
    np.testing.assert_array_equal(finish(stylized, content, strength=0.25, strength_method="identity"), stylized)
    np.testing.assert_array_equal(finish(stylized, content), stylized)
