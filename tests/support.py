"""Test helpers importable by name from any test module (``from support import ...``).

They live here rather than in conftest.py because several conftest modules exist and only one of
them can be imported as ``conftest``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from PIL import Image

from styletrain.checkpoint import save_transformer
from styletrain.metadata import ModelMetadata
from styletrain.transformer import TransformerNet

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
VGG_WEIGHTS = SHARED / "weights" / "vgg16_imagenet_features.pth"
DATA = SHARED / "data"

needs_vgg = pytest.mark.skipif(not VGG_WEIGHTS.is_file(), reason=f"needs the VGG16 weights at {VGG_WEIGHTS}")
needs_data = pytest.mark.skipif(not (DATA / "train").is_dir(), reason=f"needs the shared photos in {DATA}")


def make_checkpoint(path: Path, style_names: list[str], *, width: int = 4, num_residuals: int = 1,
                    seed: int = 0) -> Path:
    """A tiny untrained net saved in styletrain's checkpoint format, with non-trivial norm rows."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = TransformerNet(len(style_names), width=width, num_residuals=num_residuals)
        for name, param in net.named_parameters():
            if name.endswith(("scale", "shift", "norm.weight", "norm.bias")):
                param.data.uniform_(-1.0, 1.5)
    return save_transformer(net, ModelMetadata(style_names=style_names), path)


def write_images(folder: Path, count: int, size: int = 48, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        base = rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)
        image = Image.fromarray(base).resize((size, size), Image.Resampling.BILINEAR)
        paths.append(folder / f"img{i}.png")
        image.save(paths[-1])
    return paths


def code_of(call: Callable[[], object]) -> grpc.StatusCode:
    """The gRPC status code a call ends with (OK if it returns)."""
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK
