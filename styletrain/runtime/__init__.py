"""Running trained models behind one ``Stylizer`` interface: onnxruntime for ``.onnx``, torch for checkpoints.

``load_stylizer(path)`` picks the backend by suffix. Importing this package loads neither torch
nor onnxruntime; each backend module imports its own (``onnx_backend`` never imports torch).
"""

from __future__ import annotations

from pathlib import Path

from styletrain.errors import UserError
from styletrain.runtime.base import MIN_SIDE, NonFiniteOutput, RunCancelled, RunOptions, Stylizer, batch_weights

__all__ = ["BACKENDS", "MIN_SIDE", "NonFiniteOutput", "RunCancelled", "RunOptions", "Stylizer", "batch_weights", "load_stylizer"]

BACKENDS = ("onnxruntime", "torch")
DEVICES = ("cpu", "cuda")


def load_stylizer(path: str | Path, *, backend: str = "auto", device: str | None = None,
                  threads: int | None = None, providers: list[str] | None = None) -> Stylizer:
    """A model file as a ``Stylizer``: ``.onnx`` runs on onnxruntime, anything else (``.ckpt``) on torch.

    ``device`` is "cpu" or "cuda" (None: onnxruntime takes CUDA when its build has it, torch the
    CPU). ``threads`` and ``providers`` are onnxruntime settings.
    """
    path = Path(path)
    is_onnx = path.suffix.lower() == ".onnx"
    chosen = ("onnxruntime" if is_onnx else "torch") if backend == "auto" else backend
    if chosen not in BACKENDS:
        raise UserError(f"backend must be 'auto' or one of {list(BACKENDS)}; got {backend!r}")
    if device is not None and device not in DEVICES:
        raise UserError(f"device must be one of {list(DEVICES)} (or None to choose); got {device!r}")
    if chosen == "onnxruntime":
        from styletrain.runtime.onnx_backend import OnnxStylizer, default_providers

        if not is_onnx:
            raise UserError(f"the onnxruntime backend runs .onnx exports; got {path} "
                            "(export it with `styletrain export`, or use backend 'torch')")
        if providers is not None and device is not None:
            raise UserError(f"give either device or providers, not both; got {device!r} and {providers}")
        return OnnxStylizer(path, providers=providers or default_providers(device), threads=threads)
    if is_onnx:
        raise UserError(f"the torch backend runs styletrain checkpoints (.ckpt); got {path}: use backend 'onnxruntime'")
    if threads is not None or providers is not None:
        raise UserError(f"threads and providers are onnxruntime settings; {path} runs on torch")
    from styletrain.runtime.torch_backend import TorchStylizer

    return TorchStylizer.from_checkpoint(path, device=device or "cpu")
