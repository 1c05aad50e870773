"""Running a styletrain checkpoint's transformer in torch (CPU, or a given device): ``TorchStylizer``."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from styletrain.checkpoint import load_transformer
from styletrain.errors import UserError
from styletrain.runtime.base import RunOptions, Stylizer, batch_weights
from styletrain.runtime.variants import CpuFacts, cpu_facts
from styletrain.transformer import TransformerNet

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16")


def choose_precision(requested: str, device: torch.device, facts: CpuFacts | None = None) -> str:
    """``fp32`` or ``bf16`` for a run on ``device``.

    ``auto`` is bf16 (autocast, channels-last) only on a CPU with native bf16 arithmetic
    (AVX512-BF16 or AMX-BF16; ``facts`` defaults to this machine's), where oneDNN's bf16 convs
    are faster; everywhere else fp32, because emulated bf16 is slower than fp32. On CUDA ``auto``
    stays fp32 (unchanged behaviour). ``bf16`` asks for it anyway (on CPU or CUDA).
    """
    if requested not in PRECISIONS:
        raise UserError(f"precision must be one of {list(PRECISIONS)}; got {requested!r}")
    if requested != "auto":
        return requested
    if device.type != "cpu":
        return "fp32"
    return "bf16" if (facts or cpu_facts()).bf16 else "fp32"


class TorchStylizer(Stylizer):
    """A ``TransformerNet`` and its checkpoint metadata, run in eval mode under ``inference_mode``.

    ``precision`` (see ``choose_precision``): ``bf16`` runs the net under bf16 autocast in
    channels-last layout and returns float32 like fp32 does (measured cost on the shipped models:
    mean |diff| 0.4-0.7 / 255, loss within 0.7%; ``docs/cpu.md``).
    """

    backend = "torch"

    def __init__(self, net: TransformerNet, metadata: dict[str, Any], *, device: str | torch.device = "cpu",
                 precision: str = "fp32") -> None:
        self._device = torch.device(device)
        if self._device.type == "cuda" and not torch.cuda.is_available():
            raise UserError("device 'cuda' was asked for but torch sees no CUDA device; use device 'cpu'")
        self.precision = choose_precision(precision, self._device)
        self.net = net.eval().to(self._device)
        if self.precision == "bf16":
            self.net = self.net.to(memory_format=torch.channels_last)
        self.metadata = metadata
        self.style_names = list(metadata["style_names"])
        self.device = self._device.type
        self.providers = [f"torch:{self.device}"]
        log.debug("torch %s on %s", self.precision, self.device)

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, device: str | torch.device = "cpu",
                        precision: str = "fp32") -> TorchStylizer:
        """Load a ``.ckpt`` written by training or ``save_transformer``."""
        net, metadata = load_transformer(path)
        return cls(net, metadata, device=device, precision=precision)

    def run(self, batch: np.ndarray, style_weights: np.ndarray, *,
            options: RunOptions | None = None) -> np.ndarray:
        if options is not None:
            options.check()  # a torch forward cannot be interrupted: only refuse to start
        weights = batch_weights(style_weights, len(batch), len(self.style_names))
        bf16 = self.precision == "bf16"
        autocast = torch.autocast(self._device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            x = torch.as_tensor(np.asarray(batch, dtype=np.float32), device=self._device)
            if bf16:
                x = x.contiguous(memory_format=torch.channels_last)
            w = torch.from_numpy(weights).to(self._device)
            # TODO(norm interface): every net takes (B, N) weights once forward accepts them; pass w.
            out = self.net(x, w if self.net.num_styles > 1 else None)
            return out.float().contiguous().cpu().numpy()
