"""``styletrain.runtime.parity``: torch against the onnxruntime export, with the stated tolerances."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from styletrain.runtime import load_stylizer
from styletrain.runtime.parity import (FLOAT32_TOLERANCE, REDUCED_TOLERANCE, ParityError, check_parity,
                                       max_difference, parity_inputs, tolerance_for)
from support import make_checkpoint


@pytest.mark.parametrize("name", ["multi", "single"])
def test_torch_fp32_on_the_cpu_matches_onnxruntime_within_1e_4(onnx_models: dict[str, Path], name: str) -> None:
    candidate = load_stylizer(onnx_models[f"{name}_ckpt"])
    reference = load_stylizer(onnx_models[name], threads=1)
    assert tolerance_for(candidate) == FLOAT32_TOLERANCE == 5e-4
    assert max_difference(candidate, reference) <= 1e-4
    assert check_parity(candidate, reference) <= 1e-4


def test_other_weights_fail_the_check(onnx_models: dict[str, Path], tmp_path: Path) -> None:
    other = load_stylizer(make_checkpoint(tmp_path / "other.ckpt", ["candy", "mosaic", "udnie"], seed=3))
    reference = load_stylizer(onnx_models["multi"], threads=1)
    with pytest.raises(ParityError, match=r"multi: torch on cpu \(float32\) differs from onnxruntime by up to "
                                          r".* \(tolerance 0\.0005\); "
                                          r"use --precision float32, or --backend onnxruntime"):
        check_parity(other, reference, what="multi")


def test_different_styles_are_not_compared(onnx_models: dict[str, Path]) -> None:
    with pytest.raises(ParityError, match=r"hold different styles: \['mosaic'\] vs \['candy', 'mosaic', 'udnie'\]"):
        max_difference(load_stylizer(onnx_models["single_ckpt"]), load_stylizer(onnx_models["multi"], threads=1))


def test_inputs_cover_every_style_and_a_blend() -> None:
    images, rows = parity_inputs(3, height=20, width=36)
    assert images.shape == (4, 3, 20, 36) and images.dtype == np.float32
    assert 0 <= images.min() and images.max() <= 1
    np.testing.assert_allclose(rows.sum(axis=1), 1)
    np.testing.assert_array_equal(rows[:3], np.eye(3))
    assert REDUCED_TOLERANCE == pytest.approx(2 / 255)
