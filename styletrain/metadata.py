"""What a trained model says about itself: the checkpoint and ONNX metadata, typed, without torch.

One writer (``ModelMetadata.to_dict``) and one reader (``ModelMetadata.from_dict``) for the
``"styletrain"`` entry of checkpoints and the ``metadata_props["styletrain"]`` JSON of exports, so
training, ``evaluate``, the exporter and the server (which must not need torch) read it alike.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from styletrain.errors import UserError

FORMAT = "styletrain"
FORMAT_VERSION = 1
"""Checkpoint/metadata format version; a reader refuses newer versions with an 'upgrade' message."""

MIN_SIDE = 16
"""Smallest image side a net or a reference optimiser takes: below it the reflection padding of a
net's downsampled maps fails, and VGG's relu4_3 (after three poolings) is under 2x2."""


def legacy_norm(conditional: bool) -> str:
    """The norm a net config of the old form ``{"conditional": bool}`` used."""
    return "conditional_instance" if conditional else "instance"


def net_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A net config in today's form: an old ``conditional`` flag becomes the ``norm`` it meant."""
    config = dict(config)
    if "conditional" in config:
        conditional = config.pop("conditional")
        config.setdefault("norm", legacy_norm(bool(conditional)))
    return config


@dataclass
class ModelMetadata:
    """Style names, net config, loss and training settings of a trained model.

    Every field but ``style_names`` may be missing from older files (it is then None or empty);
    keys this version does not know are kept in ``extra`` and written back unchanged.
    """

    style_names: list[str]
    net: dict[str, Any] = field(default_factory=dict)
    """``TransformerNet.config()``: num_styles, width, num_residuals, norm."""
    loss: dict[str, Any] | None = None
    """``LossConfig.to_dict()``: layers and weights the net was trained with."""
    style_images: list[str] = field(default_factory=list)
    style_size: int | None = None
    lr: float | None = None
    vgg_weights: str | None = None
    base_checkpoint: str | None = None
    started_from: dict[str, Any] | None = None
    """``train --init-from``: the checkpoint whose weights the run started from, and its
    ``global_step`` and ``train_seconds`` (this model's own count from there on); nested
    ``started_from`` when that checkpoint was itself started from another."""
    recipe: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    global_step: int = 0
    train_seconds: float | None = None
    hardware: str | None = None
    styletrain_version: str | None = None
    version: int = FORMAT_VERSION
    export: dict[str, Any] | None = None
    """Written by the exporter: opset, exporter and library versions, parity check."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Keys of the stored dict that this version does not know."""

    @property
    def num_styles(self) -> int:
        return len(self.style_names)

    def to_dict(self) -> dict[str, Any]:
        """The stored form: a plain JSON-able dict (``export`` only when set)."""
        out: dict[str, Any] = {"format": FORMAT}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or (f.name == "export" and value is None):
                continue
            out[f.name] = _plain(value)
        return {**_plain(self.extra), **out}

    @classmethod
    def from_dict(cls, stored: Mapping[str, Any]) -> ModelMetadata:
        """Read a stored dict of any version up to ``FORMAT_VERSION``, tolerating missing and extra keys."""
        if not isinstance(stored, Mapping) or not isinstance(stored.get("style_names"), (list, tuple)):
            raise UserError("the model's styletrain metadata has no style_names list; re-export or re-save "
                            "it with this styletrain")
        version = stored.get("version", FORMAT_VERSION)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise UserError(f"the model has metadata format {version!r}, newer than this styletrain reads "
                            f"({FORMAT_VERSION}); upgrade styletrain")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        values = {k: _plain(v) for k, v in stored.items() if k in known and v is not None}
        values["style_names"] = [str(name) for name in stored["style_names"]]
        values["net"] = net_config(values.get("net") or {})
        extra = {k: _plain(v) for k, v in stored.items() if k not in known and k != "format"}
        return cls(**values, extra=extra)


def _plain(value: Any) -> Any:
    """A copy of ``value`` with tuples as lists and mappings as dicts, so stored forms compare equal."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
