"""``styletrain.runtime.torch_backend``: a checkpoint behind the same interface, matching onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from styletrain.errors import UserError
from styletrain.runtime import RunCancelled, RunOptions, load_stylizer
from styletrain.runtime.torch_backend import TorchStylizer

RTOL, ATOL = 1e-3, 1e-5


def test_describes_itself(onnx_models: dict[str, Path]) -> None:
    stylizer = TorchStylizer.from_checkpoint(onnx_models["multi_ckpt"])
    assert (stylizer.backend, stylizer.device, stylizer.providers) == ("torch", "cpu", ["torch:cpu"])
    assert stylizer.style_names == stylizer.metadata.style_names == ["candy", "mosaic", "udnie"]
    assert stylizer.min_side == 16


@pytest.mark.parametrize("name", ["multi", "single"])
def test_torch_and_onnxruntime_agree_through_the_interface(onnx_models: dict[str, Path], name: str) -> None:
    torch_run, onnx_run = load_stylizer(onnx_models[f"{name}_ckpt"]), load_stylizer(onnx_models[name])
    n = len(onnx_run.style_names)
    x = np.random.default_rng(4).random((2, 3, 19, 33), dtype=np.float32)
    rows = np.random.default_rng(5).random((2, n)).astype(np.float32)
    rows /= rows.sum(axis=1, keepdims=True)
    for weights in (rows, rows[0]):
        expected = onnx_run.run(x, weights)
        np.testing.assert_allclose(torch_run.run(x, weights), expected, rtol=RTOL, atol=ATOL)


def test_input_is_not_changed_and_output_is_float32(onnx_models: dict[str, Path]) -> None:
    stylizer = TorchStylizer.from_checkpoint(onnx_models["multi_ckpt"])
    x = np.random.default_rng(0).random((1, 3, 16, 24), dtype=np.float32)
    before = x.copy()
    out = stylizer.run(x, np.eye(3, dtype=np.float32)[1])
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_array_equal(x, before)


def test_cancelled_options_are_refused(onnx_models: dict[str, Path]) -> None:
    stylizer = TorchStylizer.from_checkpoint(onnx_models["single_ckpt"])
    options = RunOptions()
    options.cancel()
    with pytest.raises(RunCancelled):
        stylizer.run(np.zeros((1, 3, 16, 16), dtype=np.float32), np.ones(1, dtype=np.float32), options=options)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error for a machine without CUDA")
def test_cuda_without_a_gpu_says_so(onnx_models: dict[str, Path]) -> None:
    with pytest.raises(UserError, match="torch sees no CUDA device; use device 'cpu'"):
        load_stylizer(onnx_models["multi_ckpt"], device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu(onnx_models: dict[str, Path]) -> None:
    gpu = load_stylizer(onnx_models["multi_ckpt"], device="cuda")
    assert gpu.device == "cuda" and gpu.providers == ["torch:cuda"]
    x = np.random.default_rng(1).random((2, 3, 32, 40), dtype=np.float32)
    weights = np.eye(3, dtype=np.float32)[2]
    np.testing.assert_allclose(gpu.run(x, weights), load_stylizer(onnx_models["multi_ckpt"]).run(x, weights),
                               rtol=RTOL, atol=1e-4)
