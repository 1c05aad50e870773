"""``styletrain.runtime.cuda``: asking the driver for a GPU without torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from styletrain.runtime.cuda import driver_device_count, torch_cuda_available


def test_the_driver_and_torch_agree() -> None:
    assert torch_cuda_available() == torch.cuda.is_available()
    assert (driver_device_count() > 0) >= torch.cuda.is_available()  # torch sees a GPU only if the driver does


def test_asking_does_not_import_torch_without_a_gpu() -> None:
    code = ("import sys; from styletrain.runtime.cuda import driver_device_count, torch_cuda_available; "
            "n = driver_device_count(); ok = torch_cuda_available(); print(n, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[2])
    devices, imported = result.stdout.split()
    if devices != "0":
        pytest.skip("a GPU is present: asking torch about it then is expected")
    assert imported == "False"
