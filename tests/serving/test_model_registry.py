"""``serving.models.ModelRegistry``: loading a folder and choosing the model for a request."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from serving.models import ModelRegistry, UnknownModel, UnknownStyle
from styletrain.errors import UserError


@pytest.fixture(scope="module")
def registry(onnx_models: dict[str, Path]) -> ModelRegistry:
    return ModelRegistry.from_folder(onnx_models["dir"], threads=1)


def test_models_are_named_after_their_files(registry: ModelRegistry) -> None:
    assert {n: m.style_names for n, m in registry.models.items()} == {
        "mosaic": ["mosaic"], "multi": ["candy", "mosaic", "udnie"]}


def test_selection_prefers_the_dedicated_single_style_net(registry: ModelRegistry) -> None:
    assert registry.select(style="mosaic").name == "mosaic"  # trained for that style alone: it renders it better
    chosen = registry.select(style="mosaic", model="multi")
    assert chosen.name == "multi"
    np.testing.assert_array_equal(chosen.weights, [0, 1, 0])
    assert registry.select(style="candy").name == "multi"  # the only model holding it
    blend = registry.select(blend={"candy": 1, "udnie": 3})
    assert blend.name == "multi"
    np.testing.assert_allclose(blend.weights, [0.25, 0, 0.75])


def test_ties_break_by_name(onnx_models: dict[str, Path], tmp_path: Path) -> None:
    for name in ("b_mosaic", "a_mosaic"):
        shutil.copy(onnx_models["single"], tmp_path / f"{name}.onnx")
    registry = ModelRegistry.from_folder(tmp_path, threads=1)
    assert registry.select(style="mosaic").name == "a_mosaic"
    with pytest.raises(UserError, match="name a style or a blend; available: a_mosaic: mosaic; b_mosaic: mosaic"):
        registry.select()


def test_selection_errors(registry: ModelRegistry) -> None:
    with pytest.raises(UnknownModel, match="unknown model 'x'; available: \\['mosaic', 'multi'\\]"):
        registry.select(model="x", style="candy")
    with pytest.raises(UnknownStyle, match="^unknown style 'x'; available: mosaic: mosaic; multi: "):
        registry.select(blend={"candy": 1, "x": 1})
    with pytest.raises(UserError, match=r"^model 'mosaic' has no style 'candy' \(styles: mosaic\); "
                       "'candy' is in model 'multi'$"):
        registry.select(model="mosaic", style="candy")
