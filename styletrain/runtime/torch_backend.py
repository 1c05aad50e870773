"""Running a styletrain checkpoint's transformer in torch (CPU, or a given device): ``TorchStylizer``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from styletrain.checkpoint import load_transformer
from styletrain.errors import UserError
from styletrain.metadata import ModelMetadata
from styletrain.runtime.base import RunOptions, Stylizer, batch_weights
from styletrain.transformer import TransformerNet


class TorchStylizer(Stylizer):
    """A ``TransformerNet`` and its checkpoint metadata, run in eval mode under ``inference_mode``."""

    backend = "torch"

    def __init__(self, net: TransformerNet, metadata: ModelMetadata, *, device: str | torch.device = "cpu") -> None:
        self._device = torch.device(device)
        if self._device.type == "cuda" and not torch.cuda.is_available():
            raise UserError("device 'cuda' was asked for but torch sees no CUDA device; use device 'cpu'")
        self.net = net.eval().to(self._device)
        self.metadata = metadata
        self.style_names = list(metadata.style_names)
        self.device = self._device.type
        self.providers = [f"torch:{self.device}"]

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, device: str | torch.device = "cpu") -> TorchStylizer:
        """Load a ``.ckpt`` written by training or ``save_transformer``."""
        net, metadata = load_transformer(path)
        return cls(net, metadata, device=device)

    def run(self, batch: np.ndarray, style_weights: np.ndarray, *,
            options: RunOptions | None = None) -> np.ndarray:
        if options is not None:
            options.check()  # a torch forward cannot be interrupted: only refuse to start
        weights = batch_weights(style_weights, len(batch), len(self.style_names))
        with torch.inference_mode():
            x = torch.as_tensor(np.asarray(batch, dtype=np.float32), device=self._device)
            w = torch.from_numpy(weights).to(self._device)
            return self.net(x, w).float().cpu().numpy()
