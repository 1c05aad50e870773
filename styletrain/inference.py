"""Stylizing images with a trained model: a torch checkpoint or an exported ONNX file."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from styletrain.checkpoint import load_transformer
from styletrain.images import to_pil, to_tensor
from styletrain.metadata import MIN_SIDE


class Stylizer(Protocol):
    """A loaded model: its style names, and a call taking a PIL image and (N,) style weights."""

    style_names: list[str]
    min_side: int

    def __call__(self, image: Image.Image, weights: np.ndarray) -> Image.Image: ...


class TorchStylizer:
    """Runs a checkpoint's transformer in torch (CPU, or ``device``)."""

    min_side = MIN_SIDE

    def __init__(self, checkpoint: str | Path, device: str | torch.device = "cpu") -> None:
        self.net, self.metadata = load_transformer(checkpoint)
        self.net.to(device)
        self.device = torch.device(device)
        self.style_names = list(self.metadata.style_names)

    @torch.inference_mode()
    def __call__(self, image: Image.Image, weights: np.ndarray) -> Image.Image:
        x = to_tensor(image).to(self.device)
        w = torch.as_tensor(weights, dtype=torch.float32, device=self.device).reshape(1, -1)
        return to_pil(self.net(x, w))


def load_stylizer(path: str | Path) -> Stylizer:
    """A stylizer for a ``.onnx`` export (onnxruntime) or a styletrain checkpoint (torch)."""
    if Path(path).suffix.lower() == ".onnx":
        from styletrain.export import OnnxStylizer

        return OnnxStylizer(path)
    return TorchStylizer(path)
