"""The models a server holds, and which one runs a request.

Every ``*.onnx`` file in the models folder is loaded once as a ``styletrain.runtime`` stylizer
(one onnxruntime session each) and named after its file (``multistyle.onnx`` -> ``multistyle``).
Variant files beside a model (``multistyle.int8.onnx``) are not models of their own: the
``variant`` setting decides which of the files runs (``styletrain.runtime.variants``).
Style names may repeat across models (a 13-style net and a single-style ``mosaic.onnx`` can both
hold ``mosaic``), so a request either names its model or the server picks one with
``ModelRegistry.select``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from styletrain.errors import UserError
from styletrain.runtime import Stylizer, load_stylizer
from styletrain.styles import style_weights

log = logging.getLogger(__name__)


class UnknownModel(UserError):
    """A request named a model the server does not hold."""


@dataclass(frozen=True)
class Selection:
    """The model chosen for a request and its normalised (N,) style weights."""

    name: str
    stylizer: Stylizer
    weights: np.ndarray


class ModelRegistry:
    """Loaded models by name, in name order."""

    def __init__(self, models: Mapping[str, Stylizer]) -> None:
        self.models = dict(sorted(models.items()))

    @classmethod
    def from_folder(cls, folder: str | Path, *, providers: Sequence[str] | None = None,
                    threads: int | None = None, variant: str = "auto") -> ModelRegistry:
        """Load every ``*.onnx`` in ``folder`` but variant files; raises ``UserError`` if there are none."""
        from styletrain.runtime.variants import variant_files

        folder = Path(folder)
        if not folder.is_dir():
            raise UserError(f"models folder not found: {folder}")
        paths = list(variant_files(folder))
        if not paths:
            raise UserError(f"no .onnx models in {folder.resolve()}; export some with "
                            "`styletrain export --checkpoint CKPT --output DIR/NAME.onnx`")
        models = {}
        for path in paths:
            models[path.stem] = load_stylizer(path, backend="onnxruntime", providers=providers,
                                              threads=threads, variant=variant)
            log.info("loaded model %s (%s): %s", path.stem, getattr(models[path.stem], "variant", "fp32"),
                     ", ".join(models[path.stem].style_names))
        return cls(models)

    def select(self, *, model: str = "", style: str = "", blend: Mapping[str, float] | None = None) -> Selection:
        """The model for a request and its weights; raises ``UserError`` with the reason otherwise.

        With ``model`` empty, the candidates are the models holding every requested style (one
        style, or every style in ``blend``); the rule is: most styles first (a multi-style model
        serves blends and keeps one session hot), then the name, so the choice is deterministic.
        With no style at all, the only single-style model loaded is used, if there is exactly one.
        """
        blend = dict(blend or {})
        if model:
            if model not in self.models:
                raise UnknownModel(f"unknown model {model!r}; available: {list(self.models)}")
            name = model
        else:
            wanted = set(blend) | ({style} if style else set())
            if wanted:
                candidates = [n for n, m in self.models.items() if wanted <= set(m.style_names)]
                if not candidates:
                    raise UserError(f"no model holds all of {sorted(wanted)}; available: {self.styles_text()}")
            else:
                candidates = [n for n, m in self.models.items() if len(m.style_names) == 1]
                if len(candidates) != 1:
                    raise UserError(f"name a style or a blend; available: {self.styles_text()}")
            name = min(candidates, key=lambda n: (-len(self.models[n].style_names), n))
        stylizer = self.models[name]
        weights = style_weights(stylizer.style_names, style=style or None, blend=blend or None)
        return Selection(name, stylizer, weights)

    def styles_text(self) -> str:
        """``"multistyle: candy, mosaic; mosaic: mosaic"`` for error messages."""
        return "; ".join(f"{n}: {', '.join(m.style_names)}" for n, m in self.models.items())

    def warm_up(self) -> None:
        """One small run per model, so the first request is not the slow one."""
        for stylizer in self.models.values():
            stylizer.warm_up()
