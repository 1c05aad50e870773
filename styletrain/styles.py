"""Style names and blend weights: parsing, validation and normalisation, done once in Python.

The CLI, the exporter's parity check and the gRPC server all turn a style name or a
``{name: weight}`` mix into one (N,) weight vector here; the nets never branch on weight values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from styletrain.errors import UserError, names_text, quoted, shorten, weights_text

BLEND_TEXT_CHARS = 80
"""Longest blend text echoed in an error."""


IDENTITY = "identity"
"""A multi-style net's row trained with content and TV loss only: the photo, cleaned. Mixing it in
sets the style's strength in one pass (``with_strength``)."""


def style_name(path: str | Path) -> str:
    """A style is named after its image file: ``styles/the_scream.jpg`` -> ``the_scream``."""
    return Path(path).stem


def parse_blend(text: str) -> dict[str, float]:
    """Parse ``"candy=0.7,mosaic=0.3"`` into ``{"candy": 0.7, "mosaic": 0.3}``."""
    blend: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.rpartition("=")
        name = name.strip()
        try:
            weight = float(value)
        except ValueError:
            weight = None
        if not sep or not name or weight is None:
            raise UserError(f"blend must look like NAME=WEIGHT,NAME=WEIGHT; got {shorten(text, BLEND_TEXT_CHARS)!r}")
        if name in blend:
            raise UserError(f"style {quoted(name)} appears twice in blend {shorten(text, BLEND_TEXT_CHARS)!r}")
        blend[name] = weight
    if not blend:
        raise UserError(f"blend must look like NAME=WEIGHT,NAME=WEIGHT; got {shorten(text, BLEND_TEXT_CHARS)!r}")
    return blend


def style_weights(
    names: Sequence[str],
    *,
    style: str | None = None,
    blend: Mapping[str, float] | None = None,
) -> np.ndarray:
    """The (N,) float32 weight vector for one style name or a blend, normalised to sum to 1.

    With neither given, a single-style net gets its one style; a multi-style net needs a choice.
    """
    if style is not None and blend:
        raise UserError("give either a style or a blend, not both")
    if blend:
        unknown = sorted(set(blend) - set(names))
        if unknown:
            raise UserError(f"unknown style(s) [{names_text(unknown)}] in blend; available: [{names_text(names, 20)}]")
        bad = {k: v for k, v in blend.items() if not math.isfinite(v) or v < 0}
        largest = max(blend.values())
        if bad or not largest > 0:
            raise UserError(
                f"style weights must be finite, non-negative and sum to more than 0; got {weights_text(bad or blend)}"
            )
        # scaled by the largest first: the sum of weights near the float maximum would be inf
        scaled = {name: weight / largest for name, weight in blend.items()}
        total = sum(scaled.values())
        return np.array([scaled.get(name, 0.0) / total for name in names], dtype=np.float32)
    if style is None:
        if len(names) == 1:
            style = names[0]
        else:
            raise UserError(f"this model holds {len(names)} styles; choose one, or a blend of them "
                            f"(--style or --blend; a request's style or style_blend): {list(names)}")
    if style not in names:
        raise UserError(f"unknown style {quoted(style)}; available: [{names_text(names, 20)}]")
    weights = np.zeros(len(names), dtype=np.float32)
    weights[list(names).index(style)] = 1.0
    return weights


def with_strength(names: Sequence[str], weights: np.ndarray, strength: float | None) -> tuple[np.ndarray, str]:
    """Weights that apply the style at ``strength`` (0: the photo, 1 or None: the full style).

    Returns (weights, method): "identity" when the model has an identity row (the weights are mixed
    with it: one pass, no extra cost), "pixel" when the caller must blend the output with the input
    (``styletrain.runtime.adjust.blend_pixels``), "" at full strength.
    """
    if strength is None:
        return weights, ""
    if not (math.isfinite(strength) and 0.0 <= strength <= 1.0):
        raise UserError(f"strength must be between 0 (the photo) and 1 (the full style); got {strength}")
    if strength == 1.0:
        return weights, ""
    if IDENTITY in names:
        identity = np.zeros(len(names), dtype=np.float32)
        identity[list(names).index(IDENTITY)] = 1.0
        return (strength * weights + (1.0 - strength) * identity).astype(np.float32), "identity"
    return weights, "pixel"
