"""Do two stylizers give the same images? ``max_difference`` and ``check_parity``, with the tolerances we hold to.

Used when the server loads a checkpoint on torch next to its ``.onnx`` export (the export is the
reference), and by the tests. Torch-free: it compares what ``Stylizer.run`` returns.

Tolerances (max |difference| over pixels in [0, 1]):

- ``FLOAT32_TOLERANCE`` = 5e-4 (0.13/255): the same net in float32 on two backends (measured ~1e-5 on
  an AVX2 CPU; 1.3e-4 for the retrained ``multistyle`` on an AVX-512 one, where oneDNN and
  onnxruntime sum in other orders; a wrong export is off by 1e-2 and more);
- ``REDUCED_TOLERANCE`` = 2/255: float16 or bfloat16 compute against the float32 export, i.e. at
  most two steps of an 8-bit output. float16 autocast stays within it on the shipped nets (max
  0.5-1.0/255 measured with CPU autocast); bfloat16 does not (3.6-6.6/255), so it is not the default.
"""

from __future__ import annotations

import numpy as np

from styletrain.errors import UserError
from styletrain.runtime.base import Stylizer

FLOAT32_TOLERANCE = 5e-4
REDUCED_TOLERANCE = 2 / 255


class ParityError(UserError):
    """A stylizer's output differs from its reference by more than the tolerance."""


def tolerance_for(stylizer: Stylizer) -> float:
    """The tolerance a stylizer is held to: float32 ones to 5e-4, reduced precision to 2/255."""
    return FLOAT32_TOLERANCE if getattr(stylizer, "precision", "float32") == "float32" else REDUCED_TOLERANCE


def parity_inputs(num_styles: int, *, height: int = 64, width: int = 80,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random images, one per style alone plus one even blend: (N + 1, 3, H, W) and (N + 1, N)."""
    rng = np.random.default_rng(seed)
    rows = np.vstack([np.eye(num_styles), np.full((1, num_styles), 1.0 / num_styles)]).astype(np.float32)
    coarse = rng.random((len(rows), 3, height // 8 + 1, width // 8 + 1), dtype=np.float32)
    images = coarse.repeat(8, axis=2).repeat(8, axis=3)[:, :, :height, :width]
    images = 0.8 * images + 0.2 * rng.random(images.shape, dtype=np.float32)  # photo-like: smooth plus detail
    return np.ascontiguousarray(images), rows


def max_difference(candidate: Stylizer, reference: Stylizer, *, height: int = 64, width: int = 80,
                   repeats: int = 2) -> float:
    """Largest |candidate - reference| over every style and an even blend, at one odd-ish size.

    The candidate runs ``repeats`` times on the same batch (each run is compared), so a backend that
    switches paths after the first sighting of a shape (torch on CUDA captures a graph on the
    second) is checked on both.
    """
    if candidate.style_names != reference.style_names:
        raise ParityError(f"the two models hold different styles: {candidate.style_names} vs "
                          f"{reference.style_names}; were they made from the same checkpoint?")
    images, rows = parity_inputs(len(reference.style_names), height=height, width=width)
    expected = reference.run(images, rows)
    return max(float(np.abs(candidate.run(images, rows) - expected).max()) for _ in range(repeats))


def check_parity(candidate: Stylizer, reference: Stylizer, *, tolerance: float | None = None,
                 what: str = "model") -> float:
    """``max_difference``, raising ``ParityError`` above ``tolerance`` (default: ``tolerance_for(candidate)``)."""
    tolerance = tolerance_for(candidate) if tolerance is None else tolerance
    difference = max_difference(candidate, reference)
    if not difference <= tolerance:  # also catches NaN
        raise ParityError(
            f"{what}: {candidate.backend} on {candidate.device} ({getattr(candidate, 'precision', 'float32')}) "
            f"differs from {reference.backend} by up to {difference:.3g} (tolerance {tolerance:.3g}); "
            "use --precision float32, or --backend onnxruntime")
    return difference
