"""Making the C allocator give freed memory back to the system, so a server's RSS follows its work.

Why: glibc raises its mmap threshold after each large block is freed (up to 32 MiB), so later
large blocks (onnxruntime tensors, numpy tiles) come from the heap and stay mapped after they are
freed. Measured on the 2-core box: one staged 1024 px run left +412 MiB behind, and a whole-image
session grew by 124 MiB over 24 random sizes; with a fixed threshold, +4 and +13 MiB
(``benchmarks/RESULTS.md``, "Serving memory"). Process-wide, so called by the server at start
(and by benchmarks), never on import.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameter number (malloc.h)."""
DEFAULT_THRESHOLD = 256 * 1024


def release_freed_memory(threshold: int = DEFAULT_THRESHOLD) -> bool:
    """Serve blocks of ``threshold`` bytes or more with mmap (returned on free); False where not glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        log.debug("no mallopt in %s: freed memory is returned as the C library decides", name)
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, threshold))
