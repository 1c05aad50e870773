"""Tiles over an image, and statistics summed over tiles: the numpy side of staged inference.

A tile reads a window of the image and keeps only the part of its result that lies at least
``margin`` pixels from the window's inner edges (the net's receptive radius), so the kept parts are
what a whole-image run gives: no seams, no blending. Kept parts never overlap. Starts are
multiples of ``align`` (4: the net downsamples twice by 2). Numpy only.
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
    """As few tiles as cover [0, length) reading at most ``tile`` pixels each (plus ``align`` for rounding).

    The kept parts are about equal, start at multiples of ``align`` and tile [0, length) exactly;
    each tile reads ``margin`` pixels past its kept part on the inner sides.
    """
    if tile % align or margin % align or margin < 0:
        raise ValueError(f"tile and margin must be non-negative multiples of {align}; got {tile}, {margin}")
    count = 1
    while True:
        bounds = [0, *(round(i * length / count / align) * align for i in range(1, count)), length]
        reads = [min(length, stop + margin) - max(0, start - margin) for start, stop in zip(bounds, bounds[1:])]
        if max(reads) <= tile + align or min(np.diff(bounds)) <= align:
            break
        count += 1
    return [Span(max(0, start - margin), min(length, stop + margin), start, stop)
            for start, stop in zip(bounds, bounds[1:]) if stop > start]


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
        centred = values - mean.astype(values.dtype)[:, None, None]  # one block-sized temporary
        np.square(centred, out=centred)
        m2 = centred.sum(axis=(1, 2), dtype=np.float64)
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
