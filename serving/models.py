"""The models a server holds, and which one runs a request.

Every ``*.onnx`` file in the models folder is loaded once as a ``styletrain.runtime`` stylizer
and named after its file (``multistyle.onnx`` -> ``multistyle``). ``choose_backend`` decides what
runs it: onnxruntime (one session), or torch on the slim checkpoint ``NAME.ckpt`` next to it (on
CUDA with float16, channels_last and CUDA graphs), checked against the ``.onnx`` at load.
Variant files beside a model (``multistyle.int8.onnx``) are not models of their own: the
``variant`` setting decides which of the files runs (``styletrain.runtime.variants``).
Style names may repeat across models (a 13-style net and a single-style ``mosaic.onnx`` can both
hold ``mosaic``), so a request either names its model or the server picks one with
``ModelRegistry.select``.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from styletrain.errors import UserError, names_text, quoted
from styletrain.runtime import Stylizer, load_stylizer
from styletrain.runtime.cuda import torch_cuda_available
from styletrain.styles import style_weights

log = logging.getLogger(__name__)


class UnknownModel(UserError):
    """A request named a model the server does not hold."""


class UnknownStyle(UserError):
    """A request named a style no loaded model holds."""


@dataclass(frozen=True)
class Selection:
    """The model chosen for a request, its normalised (N,) style weights, and how to finish its output
    (strength applied by pixel blending when ``strength_method`` is "pixel"; colour preservation)."""

    name: str
    stylizer: Stylizer
    weights: np.ndarray
    strength: float | None = None
    strength_method: str = ""
    preserve_color: bool = False


def choose_backend(onnx_path: str | Path, backend: str = "auto", *, device: str | None = None,
                   cuda: Callable[[], bool] = torch_cuda_available) -> tuple[str, str | None]:
    """(backend, device) for the model exported as ``onnx_path``; device None lets onnxruntime choose.

    "auto" takes torch on CUDA when ``NAME.ckpt`` lies next to ``NAME.onnx``, ``device`` is not
    "cpu" and ``cuda()`` says torch sees a GPU (which imports torch only on a machine with a GPU);
    else onnxruntime. "torch" needs the checkpoint and runs on CUDA when there is one, else the CPU.
    """
    onnx_path = Path(onnx_path)
    checkpoint = onnx_path.with_suffix(".ckpt")
    if backend == "onnxruntime":
        return "onnxruntime", device
    if backend == "torch":
        if not checkpoint.is_file():
            raise UserError(f"--backend torch runs the slim checkpoint next to each .onnx; {checkpoint} is "
                            f"missing (copy it there, or use --backend onnxruntime)")
        return "torch", device or ("cuda" if cuda() else "cpu")
    if backend != "auto":
        raise UserError(f"backend must be one of ['auto', 'onnxruntime', 'torch']; got {backend!r}")
    if device != "cpu" and checkpoint.is_file() and cuda():
        return "torch", "cuda"
    return "onnxruntime", device


def load_model(onnx_path: str | Path, *, backend: str = "auto", device: str | None = None,
               providers: Sequence[str] | None = None, threads: int | None = None,
               precision: str | None = None, variant: str = "auto", check: bool = True) -> Stylizer:
    """The stylizer ``choose_backend`` picks for an exported model; a torch one is checked against the
    ``.onnx`` (``styletrain.runtime.parity``: within 5e-4 in float32, 2/255 in reduced precision)."""
    onnx_path = Path(onnx_path)
    chosen, device = choose_backend(onnx_path, backend, device=device)
    if chosen == "onnxruntime":
        if precision not in (None, "float32"):
            raise UserError(f"--precision {precision} is a torch setting; {onnx_path.name} runs on onnxruntime")
        return load_stylizer(onnx_path, backend="onnxruntime", threads=threads,
                             providers=list(providers) if providers else None, variant=variant)
    stylizer = load_stylizer(onnx_path.with_suffix(".ckpt"), backend="torch", device=device, precision=precision)
    if check and importlib.util.find_spec("onnxruntime") is None:
        log.warning("%s: not checked against its .onnx (onnxruntime is not installed)", onnx_path.stem)
    elif check:
        from styletrain.runtime.parity import check_parity

        reference = load_stylizer(onnx_path, backend="onnxruntime", providers=["CPUExecutionProvider"],
                                  threads=threads, variant="fp32")
        difference = check_parity(stylizer, reference, what=onnx_path.stem)
        log.info("%s on torch:%s (%s) matches its .onnx within %.2g", onnx_path.stem, stylizer.device,
                 getattr(stylizer, "precision", "float32"), difference)
    return stylizer


def model_paths(folder: str | Path) -> list[Path]:
    """The models a server of ``folder`` loads: every ``*.onnx`` but variant files; raises ``UserError``
    for a missing folder or one without models."""
    from styletrain.runtime.variants import variant_files

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"models folder not found: {folder}")
    paths = list(variant_files(folder))
    if not paths:
        raise UserError(f"no .onnx models in {folder.resolve()}; export some with "
                        "`styletrain export --checkpoint CKPT --output DIR/NAME.onnx`")
    return paths


class ModelRegistry:
    """Loaded models by name, in name order."""

    def __init__(self, models: Mapping[str, Stylizer]) -> None:
        self.models = dict(sorted(models.items()))

    @classmethod
    def from_folder(cls, folder: str | Path, *, providers: Sequence[str] | None = None,
                    threads: int | None = None, backend: str = "auto", device: str | None = None,
                    precision: str | None = None, variant: str = "auto") -> ModelRegistry:
        """Load every ``*.onnx`` in ``folder`` but variant files (``load_model``); raises ``UserError``
        if there are none."""
        models = {}
        for path in model_paths(folder):
            models[path.stem] = load_model(path, backend=backend, device=device, providers=providers,
                                           threads=threads, precision=precision,
                                           variant=variant)
            log.info("loaded model %s on %s (%s): %s", path.stem, models[path.stem].backend,
                     models[path.stem].device, ", ".join(models[path.stem].style_names))
        return cls(models)

    def select(self, *, model: str = "", style: str = "", blend: Mapping[str, float] | None = None) -> Selection:
        """The model for a request and its weights; raises ``UserError`` with the reason otherwise
        (``UnknownModel`` / ``UnknownStyle`` for a model or style the server does not hold).

        With ``model`` empty, the candidates are the models holding every requested style (one
        style, or every style in ``blend``); the rule is: fewest styles first (a net trained for one
        style renders it better than a multi-style net: checkpoints/README.md), then the name, so
        the choice is deterministic. A blend can only go to a model holding all its styles.
        With no style at all, the only single-style model loaded is used, if there is exactly one.
        """
        blend = dict(blend or {})
        wanted = set(blend) | ({style} if style else set())
        if model and model not in self.models:
            raise UnknownModel(f"unknown model {quoted(model)}; available: [{names_text(self.models, 20)}]")
        unknown = sorted(wanted - {s for m in self.models.values() for s in m.style_names})
        if unknown:
            raise UnknownStyle(f"unknown style{'s' if len(unknown) > 1 else ''} {names_text(unknown)}; "
                               f"available: {self.styles_text()}")
        if model:
            missing = sorted(wanted - set(self.models[model].style_names))
            if missing:
                raise UserError(self._elsewhere_text(model, missing))
            name = model
        else:
            if wanted:
                candidates = [n for n, m in self.models.items() if wanted <= set(m.style_names)]
                if not candidates:
                    raise UserError(f"no model holds all of {names_text(sorted(wanted))}; "
                                    f"available: {self.styles_text()}")
            else:
                candidates = [n for n, m in self.models.items() if len(m.style_names) == 1]
                if len(candidates) != 1:
                    raise UserError(f"name a style or a blend; available: {self.styles_text()}")
            name = min(candidates, key=lambda n: (len(self.models[n].style_names), n))
        stylizer = self.models[name]
        weights = style_weights(stylizer.style_names, style=style or None, blend=blend or None)
        return Selection(name, stylizer, weights)

    def _elsewhere_text(self, model: str, missing: list[str]) -> str:
        """"model 'mosaic' has no style 'candy' (styles: mosaic); 'candy' is in model 'multi'"."""
        one = len(missing) == 1
        text = (f"model {quoted(model)} has no style{'' if one else 's'} {names_text(missing)} "
                f"(styles: {', '.join(self.models[model].style_names)})")
        holders = [n for n, m in self.models.items() if set(missing) <= set(m.style_names)]
        if holders:
            where = f"model {quoted(holders[0])}" if len(holders) == 1 else f"models {names_text(holders)}"
            text += f"; {names_text(missing)} is in {where}" if one else f"; all are in {where}"
        return text

    def styles_text(self) -> str:
        """``"multistyle: candy, mosaic; mosaic: mosaic"`` for error messages."""
        return "; ".join(f"{n}: {', '.join(m.style_names)}" for n, m in self.models.items())

    def warm_up(self, shapes: Callable[[str], Iterable[tuple[int, int, int]]] | None = None) -> None:
        """One small run per model, so the first request is not the slow one; models that capture
        CUDA graphs (torch on CUDA) also capture ``shapes(device)``: (batch, height, width) buckets."""
        for stylizer in self.models.values():
            stylizer.warm_up()
            prepare = getattr(stylizer, "prepare", None)
            if shapes is not None and prepare is not None:
                prepare(shapes(stylizer.device))
