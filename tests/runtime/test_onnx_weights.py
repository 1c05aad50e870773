"""Float16 weight storage: a float16 slim checkpoint exports to a file half the size that computes
exactly what the float32-stored export does, in styletrain and in plain onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from styletrain.checkpoint import load_transformer, save_slim
from styletrain.export import export_net, export_onnx
from styletrain.runtime import load_stylizer
from styletrain.runtime.onnx_backend import load_model, read_metadata
from support import make_checkpoint


def test_a_float16_checkpoint_exports_half_the_size_with_the_same_output(tmp_path: Path) -> None:
    trained = make_checkpoint(tmp_path / "multi.ckpt", ["candy", "mosaic", "udnie"], width=8, num_residuals=2)
    half = save_slim(trained, tmp_path / "half.ckpt", dtype=torch.float16)
    packed = export_onnx(half, tmp_path / "packed.onnx")
    net, meta = load_transformer(half)  # the float16 values, held as float32: stored as they are
    plain = tmp_path / "plain.onnx"
    _export_unpacked(net, meta, plain)

    assert read_metadata(load_model(packed)).export["float16_weights"] > 0
    assert _weight_bytes(packed) < 0.55 * _weight_bytes(plain)  # the width-32 nets: 7.1 -> 3.7 MB a file
    x = np.random.default_rng(0).random((2, 3, 40, 56), dtype=np.float32)
    w = np.array([[1, 0, 0], [0.2, 0.3, 0.5]], np.float32)
    assert np.array_equal(load_stylizer(packed).run(x, w), load_stylizer(plain).run(x, w))
    session = ort.InferenceSession(str(packed), providers=["CPUExecutionProvider"])  # no styletrain code
    np.testing.assert_allclose(session.run(None, {"image": x, "style_weights": w})[0],
                               load_stylizer(plain).run(x, w), atol=1e-5)


def test_loading_gives_back_the_float32_graph(tmp_path: Path) -> None:
    half = save_slim(make_checkpoint(tmp_path / "s.ckpt", ["mosaic"]), tmp_path / "half.ckpt", dtype=torch.float16)
    path = export_onnx(half, tmp_path / "packed.onnx")
    assert any(n.op_type == "Cast" for n in onnx.load(path).graph.node)
    model = load_model(path)
    assert not any(n.op_type == "Cast" for n in model.graph.node)
    assert {t.data_type for t in model.graph.initializer} <= {onnx.TensorProto.FLOAT, onnx.TensorProto.INT64}


def test_float32_weights_stay_float32(tmp_path: Path) -> None:
    """Lossless only: weights fresh from training (not float16 values) are stored as they are."""
    path = export_onnx(make_checkpoint(tmp_path / "s.ckpt", ["mosaic"]), tmp_path / "fp32.onnx")
    assert "float16_weights" not in read_metadata(load_model(path)).export
    assert not any(n.op_type == "Cast" for n in onnx.load(path).graph.node)


def _weight_bytes(path: Path) -> int:
    return sum(len(t.raw_data) for t in onnx.load(path).graph.initializer)


def _export_unpacked(net: torch.nn.Module, meta: object, path: Path) -> None:
    """The same net exported with float16 packing turned off (the reference)."""
    import styletrain.export as export

    pack, export.pack_float16 = export.pack_float16, lambda model: 0
    try:
        export_net(net, meta, path)
    finally:
        export.pack_float16 = pack
