"""Float16 weight storage: a float16 slim checkpoint exports to a file half the size that computes
exactly what the float32-stored export does, in styletrain and in plain onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import styletrain.export
from styletrain.checkpoint import load_transformer, save_slim
from styletrain.export import export_net, export_onnx
from styletrain.runtime import load_stylizer
from styletrain.runtime.onnx_backend import load_model, read_metadata
from support import make_checkpoint


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same float16-valued net exported as usual ("packed") and with packing off ("plain")."""
    folder = tmp_path_factory.mktemp("onnx_weights")
    trained = make_checkpoint(folder / "multi.ckpt", ["candy", "mosaic", "udnie"], width=8, num_residuals=2)
    half = save_slim(trained, folder / "half.ckpt", dtype=torch.float16)
    packed = export_onnx(half, folder / "packed.onnx")
    net, meta = load_transformer(half)  # the float16 values, held as float32
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(styletrain.export, "pack_float16", lambda model: 0)
        plain = export_net(net, meta, folder / "plain.onnx")
    return {"packed": packed, "plain": plain}


def test_a_float16_checkpoint_exports_half_the_weight_bytes_with_the_same_output(exports: dict[str, Path]) -> None:
    packed, plain = exports["packed"], exports["plain"]
    assert read_metadata(load_model(packed)).export["float16_weights"] > 0
    assert _weight_bytes(packed) < 0.55 * _weight_bytes(plain)  # the width-32 nets: 7.1 -> 3.7 MB a file
    x = np.random.default_rng(0).random((2, 3, 40, 56), dtype=np.float32)
    w = np.array([[1, 0, 0], [0.2, 0.3, 0.5]], np.float32)
    expected = load_stylizer(plain).run(x, w)
    assert np.array_equal(load_stylizer(packed).run(x, w), expected)
    session = ort.InferenceSession(str(packed), providers=["CPUExecutionProvider"])  # no styletrain code
    np.testing.assert_allclose(session.run(None, {"image": x, "style_weights": w})[0], expected, atol=1e-5)


def test_loading_gives_back_the_float32_graph(exports: dict[str, Path]) -> None:
    assert any(n.op_type == "Cast" for n in onnx.load(exports["packed"]).graph.node)
    model = load_model(exports["packed"])
    assert not any(n.op_type == "Cast" for n in model.graph.node)
    assert {t.data_type for t in model.graph.initializer} <= {onnx.TensorProto.FLOAT, onnx.TensorProto.INT64}


def test_float32_weights_stay_float32(onnx_models: dict[str, Path]) -> None:
    """Lossless only: weights fresh from training (not float16 values) are stored as they are."""
    assert "float16_weights" not in read_metadata(load_model(onnx_models["multi"])).export
    assert not any(n.op_type == "Cast" for n in onnx.load(onnx_models["multi"]).graph.node)


def _weight_bytes(path: Path) -> int:
    return sum(len(t.raw_data) for t in onnx.load(path).graph.initializer)
