"""Lossless float16 storage of an exported model's weights: half the file, the same float32 maths.

``pack_float16`` stores every float32 weight that float16 holds exactly (all of them, when the net
comes from a float16 slim checkpoint) as a float16 initializer followed by a ``Cast`` to float32.
Any ONNX runtime runs that as it is (onnxruntime folds the casts when it loads the file).
``unpack_float16`` undoes it when styletrain loads a model, so the CPU rewrite, staged inference and
quantisation see the plain float32 graph the exporter wrote.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

PACKED_SUFFIX = "__float16"
MIN_ELEMENTS = 64
"""Smaller tensors (shapes, epsilons, a few biases) stay as they are: a Cast node would outweigh them."""


def pack_float16(model: onnx.ModelProto) -> int:
    """Store the exactly representable float32 initializers of ``model`` as float16 + Cast, in place;
    returns how many were packed (none when the weights are not float16 values, e.g. fresh from training)."""
    graph = model.graph
    casts, kept = [], []
    for tensor in graph.initializer:
        values = numpy_helper.to_array(tensor) if tensor.data_type == onnx.TensorProto.FLOAT else None
        if values is None or values.size < MIN_ELEMENTS or not _exact_in_float16(values):
            kept.append(tensor)
            continue
        packed = numpy_helper.from_array(values.astype(np.float16), tensor.name + PACKED_SUFFIX)
        kept.append(packed)
        casts.append(helper.make_node("Cast", [packed.name], [tensor.name], to=onnx.TensorProto.FLOAT,
                                      name=f"unpack_{tensor.name}"))
    if casts:
        del graph.initializer[:]
        graph.initializer.extend(kept)
        nodes = casts + list(graph.node)  # casts read only initializers: first keeps the order topological
        del graph.node[:]
        graph.node.extend(nodes)
    return len(casts)


def unpack_float16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Turn ``pack_float16``'s float16 initializer + Cast pairs back into float32 initializers, in place."""
    graph = model.graph
    packed = {t.name: t for t in graph.initializer
              if t.data_type == onnx.TensorProto.FLOAT16 and t.name.endswith(PACKED_SUFFIX)}
    unpacked, nodes = [], []
    for node in graph.node:
        if node.op_type == "Cast" and len(node.input) == 1 and node.input[0] in packed \
                and _cast_to(node) == onnx.TensorProto.FLOAT:
            values = numpy_helper.to_array(packed[node.input[0]]).astype(np.float32)
            unpacked.append(numpy_helper.from_array(values, node.output[0]))
        else:
            nodes.append(node)
    if unpacked:
        used = {name for node in nodes for name in node.input}
        kept = [t for t in graph.initializer if t.name not in packed or t.name in used]
        del graph.initializer[:]
        graph.initializer.extend(kept + unpacked)
        del graph.node[:]
        graph.node.extend(nodes)
    return model


def _cast_to(node: onnx.NodeProto) -> int | None:
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == "to"), None)


def _exact_in_float16(values: np.ndarray) -> bool:
    with np.errstate(over="ignore"):
        return bool(np.array_equal(values.astype(np.float16).astype(np.float32), values))
