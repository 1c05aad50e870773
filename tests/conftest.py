"""Shared fixtures: paths to ../shared data (skipping visibly when absent) and tiny checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from styletrain.checkpoint import save_transformer
from styletrain.transformer import TransformerNet

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
VGG_WEIGHTS = SHARED / "weights" / "vgg16_imagenet_features.pth"
DATA = SHARED / "data"

needs_vgg = pytest.mark.skipif(not VGG_WEIGHTS.is_file(), reason=f"needs the VGG16 weights at {VGG_WEIGHTS}")
needs_data = pytest.mark.skipif(not (DATA / "train").is_dir(), reason=f"needs the shared photos in {DATA}")


@pytest.fixture
def vgg_weights() -> Path:
    if not VGG_WEIGHTS.is_file():
        pytest.skip(f"needs the VGG16 weights at {VGG_WEIGHTS}")
    return VGG_WEIGHTS


def make_checkpoint(path: Path, style_names: list[str], *, width: int = 4, num_residuals: int = 1,
                    seed: int = 0) -> Path:
    """A tiny untrained net saved in styletrain's checkpoint format, with non-trivial norm rows."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = TransformerNet(len(style_names), width=width, num_residuals=num_residuals,
                             conditional=len(style_names) > 1)
        for name, param in net.named_parameters():
            if name.endswith(("scale", "shift", "norm.weight", "norm.bias")):
                param.data.uniform_(-1.0, 1.5)
    return save_transformer(net, {"style_names": style_names}, path)


@pytest.fixture
def single_ckpt(tmp_path: Path) -> Path:
    return make_checkpoint(tmp_path / "single.ckpt", ["mosaic"])


@pytest.fixture
def multi_ckpt(tmp_path: Path) -> Path:
    return make_checkpoint(tmp_path / "multi.ckpt", ["candy", "mosaic", "udnie"])
