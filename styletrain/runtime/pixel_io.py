"""An exported model with 8-bit pixel input and output: ``with_uint8_io``.

The float model takes (B, 3, H, W) float32 in [0, 1]; callers convert from and to 8-bit images
with ``styletrain.images.image_to_array`` / ``array_to_image``. ``with_uint8_io`` folds both
conversions into the graph: input ``pixels`` uint8 (B, H, W, 3) as PIL and numpy hold images,
output ``pixels_out`` uint8 (B, H, W, 3). The arithmetic is the same float32 arithmetic in the same
order (x / 255; clip to [0, 1], NaN -> 0, * 255 + 0.5, truncate), so the image is identical to the
float model's plus the Python conversion.

Measured (``benchmarks/bench_cpu.py``): the numpy conversions cost 15 ms at 512 px and 47 ms at
1024 px on a 2-core AMD EPYC (about 3% of an int8 run); the in-graph version saves part of that.
Torch-free.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from styletrain.runtime.onnx_backend import IMAGE, OUTPUT

PIXELS, PIXELS_OUT = "pixels", "pixels_out"


def with_uint8_io(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose image input and output are uint8 NHWC pixels (see the module doc).

    Other inputs (``style_weights``) are unchanged. Raises ``ValueError`` for a model without the
    ``image`` -> ``output`` interface of a styletrain export.
    """
    graph_inputs = {i.name: i for i in model.graph.input}
    if IMAGE not in graph_inputs or [o.name for o in model.graph.output] != [OUTPUT]:
        raise ValueError(f"expected a styletrain export ({IMAGE!r} -> {OUTPUT!r}); got inputs {list(graph_inputs)}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    dims = [d for d in graph_inputs[IMAGE].type.tensor_type.shape.dim]
    batch, height, width = (_dim(dims[i]) if len(dims) == 4 else None for i in (0, 2, 3))
    consts = {
        "pixel_io_255": np.array(255.0, np.float32), "pixel_io_half": np.array(0.5, np.float32),
        "pixel_io_zero": np.array(0.0, np.float32), "pixel_io_one": np.array(1.0, np.float32),
    }
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())
    pre = [
        helper.make_node("Transpose", [PIXELS], ["pixel_io_nchw"], perm=[0, 3, 1, 2], name="pixel_io_to_nchw"),
        helper.make_node("Cast", ["pixel_io_nchw"], ["pixel_io_float"], to=TensorProto.FLOAT, name="pixel_io_cast_in"),
        helper.make_node("Div", ["pixel_io_float", "pixel_io_255"], [IMAGE], name="pixel_io_scale_in"),
    ]
    post = [
        helper.make_node("IsNaN", [OUTPUT], ["pixel_io_nan"], name="pixel_io_isnan"),
        helper.make_node("Where", ["pixel_io_nan", "pixel_io_zero", OUTPUT], ["pixel_io_finite"], name="pixel_io_nan0"),
        helper.make_node("Clip", ["pixel_io_finite", "pixel_io_zero", "pixel_io_one"], ["pixel_io_clipped"],
                         name="pixel_io_clip"),
        helper.make_node("Mul", ["pixel_io_clipped", "pixel_io_255"], ["pixel_io_levels"], name="pixel_io_scale_out"),
        helper.make_node("Add", ["pixel_io_levels", "pixel_io_half"], ["pixel_io_rounded"], name="pixel_io_round"),
        helper.make_node("Cast", ["pixel_io_rounded"], ["pixel_io_u8"], to=TensorProto.UINT8, name="pixel_io_cast_out"),
        helper.make_node("Transpose", ["pixel_io_u8"], [PIXELS_OUT], perm=[0, 2, 3, 1], name="pixel_io_to_nhwc"),
    ]
    nodes = pre + list(graph.node) + post
    del graph.node[:]
    graph.node.extend(nodes)
    kept_inputs = [i for i in graph.input if i.name != IMAGE]
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info(PIXELS, TensorProto.UINT8, [batch, height, width, 3]))
    graph.input.extend(kept_inputs)
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(PIXELS_OUT, TensorProto.UINT8, [batch, height, width, 3]))
    onnx.checker.check_model(out)
    return out


def _dim(dim: onnx.TensorShapeProto.Dimension) -> str | int | None:
    if dim.HasField("dim_param"):
        return dim.dim_param
    return dim.dim_value if dim.HasField("dim_value") else None
