"""Memory-aware admission: every request holds its estimated peak memory against a budget while it runs.

Why: the number of inference slots alone bounds work, not memory: one small file that declares a
large image used to cost gigabytes. A request's memory is estimated from the image header,
before anything is decoded: the larger of its codec phases (``CODEC_BYTES_PER_PIXEL``: decoding,
then encoding the result) and its model run at the size it runs at (``Stylizer.memory_bytes``:
whole-image, or staged above ``Staging.min_pixels``), which come one after the other, plus a fixed
``REQUEST_OVERHEAD_BYTES``. All measured, see ``benchmarks/RESULTS.md`` ("Serving memory").

- an image whose estimate exceeds the whole budget can never be served by this server:
  INVALID_ARGUMENT (retrying cannot help; the message says how many pixels would fit), like an
  image above ``max_pixels``;
- one that does not fit next to the requests running now: RESOURCE_EXHAUSTED, "busy, retry".
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Iterator

import grpc

from serving.pipeline import Failure
from styletrain.errors import UserError
from styletrain.images import image_size
from styletrain.runtime import Stylizer

MIB = 2**20
CODEC_BYTES_PER_PIXEL = 24
"""Peak of decoding (to uint8 pixels) or of encoding the result, per pixel at the decoded size:
WebP's decoder holds the most, 19-20 measured at 2000 px (JPEG and PNG less)."""
REQUEST_OVERHEAD_BYTES = 16 * MIB
"""Per request, whatever its size: the gRPC messages, Python objects, allocator slack."""


def request_bytes(stylizer: Stylizer, width: int, height: int, *, max_side: int | None) -> int:
    """Estimated peak memory of one request for a ``width`` x ``height`` image shrunk to ``max_side``."""
    run_width, run_height = width, height
    if max_side is not None and max(width, height) > max_side:
        scale = max_side / max(width, height)
        run_width, run_height = max(1, round(width * scale)), max(1, round(height * scale))
    codec = width * height * CODEC_BYTES_PER_PIXEL
    return max(codec, stylizer.memory_bytes(run_height, run_width)) + REQUEST_OVERHEAD_BYTES


class MemoryBudget:
    """Bytes held by the requests in flight, against ``limit`` (None: no limit). Thread-safe."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def hold(self, nbytes: int, *, what: str, fits: Callable[[], str] = str) -> Iterator[None]:
        """Hold ``nbytes`` while inside; raises ``Failure`` if they can never fit (INVALID_ARGUMENT,
        ``fits()`` tells what would) or do not fit now (RESOURCE_EXHAUSTED)."""
        if self.limit is None:
            yield
            return
        if nbytes > self.limit:
            raise Failure(grpc.StatusCode.INVALID_ARGUMENT,
                          f"{what} needs about {nbytes / MIB:.0f} MiB, more than this server's whole memory "
                          f"budget of {self.limit / MIB:.0f} MiB{fits()}", reason="memory")
        with self._lock:
            if self.used + nbytes > self.limit:
                in_use = self.used
            else:
                in_use, self.used = None, self.used + nbytes
        if in_use is not None:
            raise Failure(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"server busy: {in_use / MIB:.0f} of {self.limit / MIB:.0f} MiB of memory budget in use "
                          f"and {what} needs about {nbytes / MIB:.0f} MiB; retry with backoff", reason="memory")
        try:
            yield
        finally:
            with self._lock:
                self.used -= nbytes


@contextlib.contextmanager
def admitted(budget: MemoryBudget, stylizer: Stylizer, data: bytes, *, max_pixels: int,
             max_side: int | None) -> Iterator[None]:
    """Hold the request's estimated memory while inside (see ``MemoryBudget.hold``).

    An unreadable header, or one above ``max_pixels``, is charged the overhead only: decoding
    refuses it with its own message.
    """
    try:
        width, height = image_size(data)
    except UserError:
        width = height = 0
    if width * height > max_pixels:
        width = height = 0
    nbytes = request_bytes(stylizer, width, height, max_side=max_side)
    what = f"a {width}x{height} image" if width else "this request"
    with budget.hold(nbytes, what=what, fits=lambda: _what_fits(budget, stylizer, width, height, max_side)):
        yield


def _what_fits(budget: MemoryBudget, stylizer: Stylizer, width: int, height: int, max_side: int | None) -> str:
    """"; send at most about N pixels (e.g. W x H)" for a message, when some smaller size fits the budget."""
    if budget.limit is None or not width:
        return ""
    low, high = 0.0, 1.0
    for _ in range(30):  # the estimate grows with the scale: bisect for the largest that fits
        mid = (low + high) / 2
        w, h = max(1, math.floor(width * mid)), max(1, math.floor(height * mid))
        low, high = (mid, high) if request_bytes(stylizer, w, h, max_side=max_side) <= budget.limit else (low, mid)
    w, h = math.floor(width * low), math.floor(height * low)
    if w < 1 or h < 1:
        return "; no image fits it: raise --memory-budget"
    return f"; send at most about {w * h} pixels (e.g. {w}x{h}) or raise --memory-budget"
