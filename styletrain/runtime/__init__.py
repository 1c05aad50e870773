"""Running trained models behind one ``Stylizer`` interface: onnxruntime for ``.onnx``, torch for checkpoints.

``load_stylizer(path)`` picks the backend by suffix, and the variant (``styletrain.runtime.variants``:
fp32 or int8 file on onnxruntime, fp32 or bf16 on torch) for this machine. Importing this package
loads neither torch nor onnxruntime; each backend module imports its own (``onnx_backend`` never
imports torch).
"""

from __future__ import annotations

import logging
from pathlib import Path

from styletrain.errors import UserError
from styletrain.runtime.base import MIN_SIDE, NonFiniteOutput, RunCancelled, RunOptions, Stylizer, batch_weights

__all__ = ["BACKENDS", "MIN_SIDE", "NonFiniteOutput", "RunCancelled", "RunOptions", "Stylizer", "batch_weights",
           "load_stylizer"]

log = logging.getLogger(__name__)

BACKENDS = ("onnxruntime", "torch")
DEVICES = ("cpu", "cuda")


TORCH_VARIANTS = {"auto": None, "fp32": "float32", "bf16": "bfloat16"}
"""``variant`` names for a checkpoint, as torch precisions (None: the device's default)."""


def load_stylizer(path: str | Path, *, backend: str = "auto", device: str | None = None,
                  threads: int | None = None, providers: list[str] | None = None,
                  precision: str | None = None, variant: str = "auto") -> Stylizer:
    """A model file as a ``Stylizer``: ``.onnx`` runs on onnxruntime, anything else (``.ckpt``) on torch.

    ``device`` is "cpu" or "cuda" (None: onnxruntime takes CUDA when its build has it, torch the
    CPU). ``threads`` and ``providers`` are onnxruntime settings. ``variant`` is an onnxruntime
    setting too: one of ``variants.VARIANTS`` (``auto``: int8 ``NAME.int8.onnx`` where it exists and
    is faster on this CPU, else fp32); a variant file given directly (``NAME.int8.onnx``) is loaded
    as it is. ``precision`` ("float32", "float16", "bfloat16"; None: float16 on CUDA, float32 on
    the CPU) is torch's, whose CUDA path also uses channels_last and
    CUDA graphs (``styletrain.runtime.torch_backend``).
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
        if precision not in (None, "float32"):
            raise UserError(f"precision {precision!r} is a torch setting; onnxruntime runs {path} in float32")
        from styletrain.runtime.variants import choose_variant, is_variant_file

        providers = providers or default_providers(device)
        if is_variant_file(path):
            if variant not in ("auto", path.stem.rsplit(".", 1)[-1]):
                raise UserError(f"{path.name} is the {path.stem.rsplit('.', 1)[-1]} variant; variant {variant!r} "
                                "was asked for (give the fp32 NAME.onnx to choose)")
            return OnnxStylizer(path, providers=providers, threads=threads)
        choice = choose_variant(path, variant, providers=providers)
        log.log(logging.DEBUG if choice.path == path else logging.INFO, "%s: running %s (%s)",
                path.name, choice.path.name, choice.reason)
        return OnnxStylizer(choice.path, providers=providers, threads=threads)
    if is_onnx:
        raise UserError(f"the torch backend runs styletrain checkpoints (.ckpt); got {path}: use backend 'onnxruntime'")
    if threads is not None or providers is not None:
        raise UserError(f"threads and providers are onnxruntime settings; {path} runs on torch")
    from styletrain.runtime.torch_backend import TorchStylizer

    if variant not in TORCH_VARIANTS:
        raise UserError(f"{path} runs on torch, whose variants are {list(TORCH_VARIANTS)}; got {variant!r}")
    return TorchStylizer.from_checkpoint(path, device=device or "cpu", precision=precision or TORCH_VARIANTS[variant])
