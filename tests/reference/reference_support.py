"""Fixtures shared by the reference tests (imported by name; a nested conftest would shadow
tests/conftest.py as the ``conftest`` module)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from support import DATA, VGG_WEIGHTS
from styletrain.images import load_tensor

CONTENT = DATA / "content"
STYLES = DATA / "styles"
needs_images = pytest.mark.skipif(not (CONTENT.is_dir() and STYLES.is_dir()),
                                  reason=f"needs the shared demo photos and styles in {DATA}")
needs_vgg = pytest.mark.skipif(not VGG_WEIGHTS.is_file(), reason=f"needs the VGG16 weights at {VGG_WEIGHTS}")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on the shared 2-core machine two threads contend and run 4-8x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def photo(side: int = 48, name: str = "chicago.jpg") -> torch.Tensor:
    return load_tensor(CONTENT / name, max_side=side)


def style(side: int = 64, name: str = "mosaic.jpg") -> torch.Tensor:
    return load_tensor(STYLES / name, max_side=side)


def no_hooks(model: torch.nn.Module) -> bool:
    """True when no module of ``model`` carries a forward, pre-forward or backward hook."""
    return not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
                   for m in model.modules())


def weights_path() -> Path:
    return VGG_WEIGHTS
