"""Is there a CUDA GPU torch can use? Asked of the NVIDIA driver first, so a machine without one never imports torch.

The server's ``--backend auto`` asks this for every model: torch on CUDA when the answer is yes
(and the model's checkpoint is there), onnxruntime otherwise. Nothing here imports torch unless the
driver reports a device.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging

log = logging.getLogger(__name__)

_DRIVER_LIBRARIES = ("libcuda.so.1", "libcuda.so", "nvcuda.dll")


def driver_device_count() -> int:
    """CUDA devices the NVIDIA driver sees (it honours ``CUDA_VISIBLE_DEVICES``); 0 without a driver.

    Uses the driver API through ctypes (``cuInit``, ``cuDeviceGetCount``): no torch, no CUDA toolkit.
    """
    for name in _DRIVER_LIBRARIES:
        try:
            driver = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_int(0)
        if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
            log.debug("%s is present but reports no usable device", name)
            return 0
        return count.value
    return 0


def torch_cuda_available() -> bool:
    """True when torch is installed, the driver sees a GPU and this torch build can use it.

    Imports torch only in the last case (a GPU is there), so CPU-only servers stay torch-free.
    """
    if importlib.util.find_spec("torch") is None or driver_device_count() == 0:
        return False
    import torch

    return torch.cuda.is_available()
