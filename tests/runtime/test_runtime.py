"""``styletrain.runtime``: choosing a backend, the shared ``Stylizer`` behaviour, ``RunOptions``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from styletrain.errors import UserError
from styletrain.runtime import RunCancelled, RunOptions, Stylizer, batch_weights, load_stylizer
from styletrain.runtime.onnx_backend import OnnxStylizer
from styletrain.runtime.torch_backend import TorchStylizer


def test_backend_follows_the_suffix(onnx_models: dict[str, Path]) -> None:
    assert isinstance(load_stylizer(onnx_models["multi"], threads=1), OnnxStylizer)
    assert isinstance(load_stylizer(onnx_models["multi_ckpt"]), TorchStylizer)
    assert load_stylizer(onnx_models["single"], device="cpu").providers == ["CPUExecutionProvider"]


@pytest.mark.parametrize(("model", "options", "match"), [
    ("multi", {"backend": "tensorflow"},
     r"backend must be 'auto' or one of \['onnxruntime', 'torch'\]; got 'tensorflow'"),
    ("multi_ckpt", {"backend": "onnxruntime"}, r"onnxruntime backend runs \.onnx exports.*styletrain export"),
    ("multi", {"backend": "torch"}, r"torch backend runs styletrain checkpoints \(\.ckpt\)"),
    ("multi_ckpt", {"threads": 2}, "threads and providers are onnxruntime settings"),
    ("multi", {"device": "tpu"}, r"device must be one of \['cpu', 'cuda'\]"),
    ("multi", {"device": "cpu", "providers": ["CPUExecutionProvider"]}, "either device or providers"),
])
def test_bad_choices_say_what_to_do(onnx_models: dict[str, Path], model: str, options: dict, match: str) -> None:
    with pytest.raises(UserError, match=match):
        load_stylizer(onnx_models[model], **options)


@pytest.mark.parametrize("model", ["multi", "multi_ckpt"])
def test_a_pil_image_in_a_pil_image_out(onnx_models: dict[str, Path], model: str) -> None:
    stylizer: Stylizer = load_stylizer(onnx_models[model])
    stylizer.warm_up(side=16)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (17, 29, 3), dtype=np.uint8))
    out = stylizer(image, np.array([0.2, 0.3, 0.5], dtype=np.float32))
    assert (out.mode, out.size) == ("RGB", (29, 17))


def test_batch_weights_gives_one_row_per_image() -> None:
    row = np.array([0.25, 0.75], dtype=np.float32)
    np.testing.assert_array_equal(batch_weights(row, 3, 2), np.tile(row, (3, 1)))
    rows = np.array([[1, 0], [0, 1]], dtype=np.float64)
    out = batch_weights(rows, 2, 2)
    assert out.dtype == np.float32 and out.flags.writeable
    np.testing.assert_array_equal(out, rows)
    with pytest.raises(ValueError, match=r"must be \(2,\) or \(3, 2\) for a batch of 3 on a 2-style model"):
        batch_weights(rows, 3, 2)


def test_run_options_interrupt_only_the_runs_in_progress() -> None:
    options, stopped = RunOptions(), []
    with options.interrupts(lambda: stopped.append("first")):
        pass
    with options.interrupts(lambda: stopped.append("second")):
        options.cancel()
        assert options.cancelled
    assert stopped == ["second"]
    with pytest.raises(RunCancelled), options.interrupts(lambda: stopped.append("third")):
        pass
    assert stopped == ["second"]


def test_the_onnx_runtime_and_the_server_load_without_torch() -> None:
    code = ("import sys, styletrain.runtime, styletrain.runtime.onnx_backend, serving.server; "
            "print(sorted(m for m in ('torch', 'styletrain.cli') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.stdout.strip() == "[]"
