"""Tiles over an image, and statistics summed over tiles: the numpy side of staged inference.

A tile reads a window of the image and keeps only the part of its result that lies at least
``margin`` pixels from the window's inner edges (the net's receptive radius), so the kept parts are
what a whole-image run gives: no seams, no blending. Kept parts never overlap. Sides and starts
are multiples of ``align`` (4: the net downsamples twice by 2). Numpy only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Span:
    """One tile along one axis: it reads [start, stop) and keeps [keep_start, keep_stop)."""

    start: int
    stop: int
    keep_start: int
    keep_stop: int


def spans(length: int, tile: int, margin: int, align: int = 4) -> list[Span]:
    """Tiles covering [0, length) that read at most ``tile`` (and at least ``2 * margin + align``) pixels each.

    Each keeps what lies ``margin`` or more from its inner edges; the kept parts tile [0, length)
    exactly. The last tile is moved back to full length (fewer shapes for onnxruntime to plan).
    """
    if tile % align or margin % align or margin < 0:
        raise ValueError(f"tile and margin must be non-negative multiples of {align}; got {tile}, {margin}")
    tile = max(tile, 2 * margin + align)
    if length <= tile:
        return [Span(0, length, 0, length)]
    out: list[Span] = []
    start = 0
    while True:
        stop = start + tile
        keep_start = out[-1].keep_stop if out else 0
        if stop >= length:
            start = max(0, (length - tile) // align * align)
            out.append(Span(start, length, keep_start, length))
            return out
        out.append(Span(start, stop, keep_start, stop - margin))
        start = stop - 2 * margin


@dataclass(frozen=True)
class Tile:
    """One tile: the rows and columns it reads and those it keeps, in image pixels."""

    rows: Span
    cols: Span


def tiles(height: int, width: int, tile: int, margin: int, align: int = 4) -> Iterator[list[Tile]]:
    """The tiles of a ``height`` x ``width`` image, one list per row of tiles, top to bottom."""
    columns = spans(width, tile, margin, align)
    for rows in spans(height, tile, margin, align):
        yield [Tile(rows, cols) for cols in columns]


@dataclass
class ChannelStats:
    """Per-channel count, mean and sum of squared deviations, merged over tiles in float64 (Chan et al.)."""

    count: int = 0
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    m2: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def add(self, values: np.ndarray) -> None:
        """Fold in a (C, h, w) block of values."""
        n = values.shape[1] * values.shape[2]
        if n == 0:
            return
        mean = values.mean(axis=(1, 2), dtype=np.float64)
        m2 = np.square(values - mean[:, None, None].astype(values.dtype)).sum(axis=(1, 2), dtype=np.float64)
        if self.count == 0:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta * delta * (self.count * n / total)
        self.count = total

    def mean_var(self) -> tuple[np.ndarray, np.ndarray]:
        """float32 (C,) mean and biased variance, as ``InstanceNormalization`` computes them."""
        if self.count == 0:
            raise ValueError("no values were added")
        return self.mean.astype(np.float32), (self.m2 / self.count).astype(np.float32)
