"""Made-up photos for the benchmarks (no files needed): smooth noise, which a JPEG encoder compresses
like a photo, where white noise would make requests several times bigger than real ones."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def photo_jpeg(width: int, height: int, seed: int = 0, *, block: int = 8) -> bytes:
    """A ``width`` x ``height`` JPEG (quality 90) of random colours every ``block`` px, smoothly resized."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, height // block), max(2, width // block), 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()
