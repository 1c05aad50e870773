"""The perceptual loss's settings: layers and weights, defined once and importable without torch.

The command-line parsers show these defaults, training records ``to_dict()`` in every checkpoint, and
``evaluate`` rebuilds the same settings with ``from_dict``; ``terms()`` builds the loss terms.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from styletrain.errors import UserError

if TYPE_CHECKING:
    from styletrain.losses import LossTerm


@dataclass(frozen=True)
class LossConfig:
    """Loss layers and weights. The defaults suit the Caffe-VGG16 weights (Johnson et al.'s code).

    To add a loss term, subclass with a field for its weight and extend ``terms()``: training logs
    it, the reference optimisers minimise it and ``evaluate`` reports it, by name.
    """

    content_layer: str = "relu3_3"
    style_layers: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
    content_weight: float = 1.0
    style_weight: float = 5.0
    style_layer_weights: tuple[float, ...] | None = None
    tv_weight: float = 1e-5
    arch: str = "vgg16"

    def __post_init__(self) -> None:
        # any sequence (a list from a checkpoint or the command line) is stored as a tuple
        object.__setattr__(self, "style_layers", tuple(self.style_layers))
        if self.style_layer_weights is not None:
            object.__setattr__(self, "style_layer_weights", tuple(self.style_layer_weights))
        if self.style_layer_weights is not None and len(self.style_layer_weights) != len(self.style_layers):
            raise UserError(
                f"style_layer_weights needs one weight per style layer ({len(self.style_layers)}); "
                f"got {len(self.style_layer_weights)}"
            )
        for name in ("content_weight", "style_weight", "tv_weight"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be non-negative; got {getattr(self, name)}")

    @property
    def layer_weights(self) -> tuple[float, ...]:
        return self.style_layer_weights or (1.0,) * len(self.style_layers)

    def terms(self) -> list[LossTerm]:
        """The weighted loss terms, in the order they are reported: content, style, tv."""
        from styletrain.losses import ContentLoss, StyleLoss, TotalVariationLoss

        return [ContentLoss(self.content_layer, self.content_weight),
                StyleLoss(self.style_layers, self.style_weight, self.layer_weights),
                TotalVariationLoss(self.tv_weight)]

    def to_dict(self) -> dict[str, Any]:
        """The stored form (lists for tuples), as in every checkpoint's ``loss`` entry."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, stored: Mapping[str, Any]) -> LossConfig:
        """Settings back from ``to_dict()`` output; a ``UserError`` if they name fields this version lacks."""
        try:
            return cls(**stored)
        except TypeError as exc:
            raise UserError(f"the loss settings {dict(stored)} do not fit this styletrain ({exc}); "
                            "upgrade styletrain") from None
