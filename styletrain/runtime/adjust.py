"""Adjustments applied to a model's output after it runs, with any backend: strength by pixel
blending and colour preservation. Arrays are float32 (B, 3, H, W) in [0, 1]; no torch."""

from __future__ import annotations

import numpy as np

from styletrain.images import array_to_pixels, pixels_to_array

RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114],
                       [0.595716, -0.274453, -0.321263],
                       [0.211456, -0.522591, 0.311135]], dtype=np.float32)
"""NTSC YIQ: Y is the luminance, I and Q carry the colour (Gatys et al. 2016, luminance-only transfer)."""
YIQ_TO_RGB = np.linalg.inv(RGB_TO_YIQ).astype(np.float32)


def _mix(matrix: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Apply a 3x3 colour matrix to (B, 3, H, W) images."""
    return np.einsum("ij,bjhw->bihw", matrix, image, optimize=True)


def preserve_color(stylized: np.ndarray, content: np.ndarray) -> np.ndarray:
    """The stylized images' luminance with the content images' colour: the style's strokes and
    texture, the photo's colours (Gatys et al. 2016, "Preserving color in neural artistic style transfer")."""
    y = _mix(RGB_TO_YIQ[:1], stylized)
    iq = _mix(RGB_TO_YIQ[1:], content)
    return np.clip(_mix(YIQ_TO_RGB, np.concatenate([y, iq], axis=1)), 0.0, 1.0)


def blend_pixels(stylized: np.ndarray, content: np.ndarray, strength: float) -> np.ndarray:
    """``strength`` of the stylized images over the content: the fallback for models without an
    identity row (a mix of two images, so at middle strengths both show through)."""
    return strength * stylized + (1.0 - strength) * content


def finish(stylized: np.ndarray, content: np.ndarray, *, strength: float | None = None,
           strength_method: str = "", preserve: bool = False) -> np.ndarray:
    """A model's output after the request's adjustments (``strength_method`` from
    ``styletrain.styles.with_strength``: "pixel" blends here, "identity" was done by the model)."""
    if strength_method == "pixel" and strength is not None:
        stylized = blend_pixels(stylized, content, strength)
    if preserve:
        stylized = preserve_color(stylized, content)
    return stylized


def finish_pixels(stylized: np.ndarray, content: np.ndarray, *, strength: float | None = None,
                  strength_method: str = "", preserve: bool = False) -> np.ndarray:
    """``finish`` on uint8 (H, W, 3) pixels, as the server and ``Stylizer.__call__`` hold them;
    the output is returned as it is when there is nothing to adjust."""
    if not preserve and strength_method != "pixel":
        return stylized
    adjusted = finish(pixels_to_array(stylized), pixels_to_array(content), strength=strength,
                      strength_method=strength_method, preserve=preserve)
    return array_to_pixels(adjusted)
