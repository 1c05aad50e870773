"""``styletrain.runtime.onnx_backend``: loading rules, batches with per-row weights, cancellation."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

from styletrain.errors import UserError
from styletrain.runtime import RunCancelled, RunOptions
from styletrain.runtime.base import HOST_COPY_BYTES_PER_PIXEL
from styletrain.runtime.onnx_backend import OnnxStylizer

RTOL, ATOL = 1e-3, 1e-5


def test_describes_itself(onnx_models: dict[str, Path]) -> None:
    stylizer = OnnxStylizer(onnx_models["multi"], providers=["CPUExecutionProvider"], threads=1)
    assert (stylizer.backend, stylizer.device, stylizer.providers) == ("onnxruntime", "cpu", ["CPUExecutionProvider"])
    assert stylizer.style_names == stylizer.metadata.style_names == ["candy", "mosaic", "udnie"]
    assert stylizer.min_side == 16


def test_per_row_weights_in_one_batch(onnx_models: dict[str, Path]) -> None:
    stylizer = OnnxStylizer(onnx_models["multi"])
    x = np.random.default_rng(0).random((1, 3, 24, 24), dtype=np.float32)
    rows = np.eye(3, dtype=np.float32)
    batched = stylizer.run(np.repeat(x, 3, axis=0), rows)
    for i in range(3):
        np.testing.assert_allclose(batched[i], stylizer.run(x, rows[i])[0], rtol=RTOL, atol=ATOL)
    assert not np.allclose(batched[0], batched[1], atol=1e-3)


def test_weights_of_the_wrong_shape_are_refused(onnx_models: dict[str, Path]) -> None:
    stylizer = OnnxStylizer(onnx_models["multi"])
    x = np.zeros((2, 3, 16, 16), dtype=np.float32)
    with pytest.raises(ValueError, match=r"style_weights must be \(3,\) or \(2, 3\) .* got shape \(2,\)"):
        stylizer.run(x, np.array([0.5, 0.5], dtype=np.float32))
    with pytest.raises(ValueError, match=r"got shape \(3, 3\)"):
        stylizer.run(x, np.eye(3, dtype=np.float32))


def test_cancelled_options_stop_the_run(onnx_models: dict[str, Path]) -> None:
    stylizer = OnnxStylizer(onnx_models["multi"], threads=1)
    x = np.random.default_rng(0).random((8, 3, 256, 256), dtype=np.float32)
    weights = np.eye(3, dtype=np.float32)[0]
    options = RunOptions()
    stylizer.run(x, weights, options=options)  # warm: the timed run below is not the cold first one
    started = time.perf_counter()
    stylizer.run(x, weights, options=options)
    full_run = time.perf_counter() - started

    # cancelled while running: onnxruntime's terminate flag ends the run early
    timer = threading.Timer(full_run / 10, options.cancel)
    started = time.perf_counter()
    timer.start()
    try:
        with pytest.raises(RunCancelled, match="the call ended"):
            stylizer.run(x, weights, options=options)
    finally:
        timer.cancel()
    assert time.perf_counter() - started < full_run
    # cancelled before: never starts
    with pytest.raises(RunCancelled):
        stylizer.run(x[:1], weights, options=options)
    assert stylizer.run(x[:1], weights).shape == (1, 3, 256, 256)  # other calls are unaffected


def test_refuses_models_with_external_data(onnx_models: dict[str, Path], tmp_path: Path) -> None:
    model = onnx.load(onnx_models["multi"])
    onnx.save_model(model, tmp_path / "ext.onnx", save_as_external_data=True,
                    location="ext.data", size_threshold=0)
    assert (tmp_path / "ext.data").is_file()
    with pytest.raises(UserError, match="references external data"):
        OnnxStylizer(tmp_path / "ext.onnx")


def test_refuses_foreign_and_missing_models(onnx_models: dict[str, Path], tmp_path: Path) -> None:
    model = onnx.load(onnx_models["multi"])
    del model.metadata_props[:]
    onnx.save_model(model, tmp_path / "foreign.onnx")
    with pytest.raises(UserError, match="not a styletrain export"):
        OnnxStylizer(tmp_path / "foreign.onnx")
    with pytest.raises(UserError, match="ONNX model not found"):
        OnnxStylizer(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(UserError, match="could not read ONNX model"):
        OnnxStylizer(tmp_path / "junk.onnx")


def test_a_cuda_run_is_charged_only_its_host_copies(onnx_models: dict[str, Path]) -> None:
    """With onnxruntime-gpu the net's maps live in GPU memory: charging them to the host budget would
    let only a request or two of 720p into a batch."""
    stylizer = OnnxStylizer(onnx_models["multi"], threads=1)
    on_cpu, staged = stylizer.memory_bytes(720, 1280), stylizer.memory_bytes(2000, 2000)
    stylizer.device = "cuda"  # as a stylizer on the CUDA provider reports itself
    assert stylizer.memory_bytes(720, 1280) == 720 * 1280 * HOST_COPY_BYTES_PER_PIXEL < on_cpu / 5
    # an image large enough to run in stages keeps their maps in host memory, on any device
    assert stylizer.runs_staged(2000, 2000) and stylizer.memory_bytes(2000, 2000) == staged
