"""``styletrain.runtime.pixel_io``: the uint8 NHWC graph gives the float graph's image exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image

from styletrain.images import array_to_image, image_to_array
from styletrain.runtime.cpu_graph import rewrite_for_cpu
from styletrain.runtime.onnx_backend import CPU
from styletrain.runtime.pixel_io import PIXELS, PIXELS_OUT, with_uint8_io


@pytest.mark.parametrize("name", ["single", "multi"])
def test_same_image_as_float_graph_and_conversion(onnx_models: dict[str, Path], name: str) -> None:
    model, _ = rewrite_for_cpu(onnx.load(onnx_models[name]))
    pixels = with_uint8_io(model)
    assert [i.name for i in pixels.graph.input][0] == PIXELS
    assert [o.name for o in pixels.graph.output] == [PIXELS_OUT]
    float_run = ort.InferenceSession(model.SerializeToString(), providers=[CPU])
    pixel_run = ort.InferenceSession(pixels.SerializeToString(), providers=[CPU])
    extra = {}
    if name == "multi":
        extra = {"style_weights": np.array([[0.2, 0.5, 0.3]], np.float32)}
    for height, width in ((16, 16), (37, 53)):
        image = Image.fromarray(np.random.default_rng(height).integers(0, 256, (height, width, 3), dtype=np.uint8))
        expected = np.asarray(array_to_image(float_run.run(None, {"image": image_to_array(image), **extra})[0]))
        got = pixel_run.run(None, {PIXELS: np.asarray(image)[None], **extra})[0]
        assert got.dtype == np.uint8 and got.shape == (1, height, width, 3)
        np.testing.assert_array_equal(got[0], expected)


def test_refuses_a_graph_that_is_not_an_export() -> None:
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    with pytest.raises(ValueError, match="expected a styletrain export"):
        with_uint8_io(onnx.helper.make_model(graph))
