"""Exported graphs with their instance-norm statistics as inputs, and the pieces of such a graph.

A large image runs in stages (``styletrain.runtime.staged``) that need two edits of a loaded export,
made at load time (the shipped files are never re-exported):

- ``fixed_stats_model``: every ``InstanceNormalization`` takes the mean and variance of its input as
  graph inputs ``norm{i}.mean`` / ``norm{i}.var`` (C,) instead of computing them, so a tile is
  normalised exactly as the whole image is;
- ``segment``: the part of a graph that computes some tensors from others (a stored map to the
  next norm's input, say), as a model of its own.

``activations``, ``receptive_radius`` and ``is_cut`` answer the questions the stage plan asks of a
graph. Torch-free, like ``onnx_backend``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import onnx
from onnx import TensorProto, helper

NORM_OP = "InstanceNormalization"
SHAPE_OPS = ("Shape", "Size")
"""Ops whose output depends on a tensor's shape only, never on its values."""


@dataclass(frozen=True)
class NormStat:
    """One instance norm: the tensor it normalises, and the names of its statistics inputs."""

    input: str
    mean: str
    var: str


def norm_stats(model: onnx.ModelProto) -> list[NormStat]:
    """One ``NormStat`` per instance norm of an export, in graph order."""
    nodes = [n for n in model.graph.node if n.op_type == NORM_OP]
    return [NormStat(n.input[0], f"norm{i}.mean", f"norm{i}.var") for i, n in enumerate(nodes)]


def _channels(model: onnx.ModelProto, node: onnx.NodeProto) -> int | str:
    """The channel count of a norm (from its scale initializer), or a symbolic name if not stored."""
    for init in model.graph.initializer:
        if init.name == node.input[1] and len(init.dims) == 1:
            return int(init.dims[0])
    return f"{node.output[0]}_channels"


def fixed_stats_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose norms use given (C,) statistics: y = (x - mean) / sqrt(var + eps) * scale + bias.

    That is inference-mode ``BatchNormalization``, one fused kernel; so a model of batch 1 only."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    stats = iter(norm_stats(model))
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type != NORM_OP:
            nodes.append(node)
            continue
        stat = next(stats)
        x, scale, bias = node.input
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        # Inference-mode batch norm is exactly this, with per-channel (C,) statistics given as inputs.
        nodes.append(helper.make_node("BatchNormalization", [x, scale, bias, stat.mean, stat.var],
                                      list(node.output), epsilon=eps))
        channels = _channels(model, node)
        graph.input.extend([_float_info(stat.mean, [channels]), _float_info(stat.var, [channels])])
    del graph.node[:]
    graph.node.extend(nodes)
    return out


def _float_info(name: str, shape: Sequence[int | str] | None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    """The node that computes each tensor."""
    return {out: node for node in graph.node for out in node.output if out}


def needed(
    graph: onnx.GraphProto, outputs: Iterable[str], stop: Iterable[str]
) -> tuple[list[onnx.NodeProto], set[str]]:
    """The nodes (in graph order) that compute ``outputs`` from ``stop`` tensors, and every tensor they read
    (initializers and graph inputs included)."""
    made_by = producers(graph)
    stop, wanted, seen = set(stop), list(outputs), set()
    nodes: set[int] = set()
    while wanted:
        name = wanted.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in stop or name not in made_by:
            continue
        node = made_by[name]
        nodes.add(id(node))
        wanted += [i for i in node.input if i]
    return [n for n in graph.node if id(n) in nodes], seen


def activations(graph: onnx.GraphProto, source: str) -> set[str]:
    """Tensors whose values depend on ``source``'s values (not only on its shape)."""
    found = {source}
    for node in graph.node:  # graph order is topological
        if node.op_type not in SHAPE_OPS and found.intersection(node.input):
            found.update(o for o in node.output if o)
    return found


def segment(model: onnx.ModelProto, inputs: Mapping[str, Sequence[int | str] | None],
            outputs: Mapping[str, Sequence[int | str] | None]) -> onnx.ModelProto:
    """The model that computes ``outputs`` from ``inputs`` (name -> shape, None: unknown) and whatever
    graph inputs (style weights, statistics) those nodes read; initializers pruned to what is used."""
    nodes, read = needed(model.graph, outputs, inputs)
    graph_inputs = {i.name: i for i in model.graph.input}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    del graph.node[:], graph.input[:], graph.output[:], graph.value_info[:]
    graph.node.extend(nodes)
    graph.input.extend([_float_info(name, shape) for name, shape in inputs.items()])
    graph.input.extend([info for name, info in graph_inputs.items() if name in read and name not in inputs])
    graph.output.extend([_float_info(name, shape) for name, shape in outputs.items()])
    initializers = [i for i in graph.initializer if i.name in read and i.name not in inputs]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    return out


def receptive_radius(model: onnx.ModelProto, inputs: Iterable[str], output: str,
                     scales: Mapping[str, float]) -> float:
    """How far (in image pixels) a value of ``output`` can see from where it is in its ``inputs``:
    the sum of the convolution half-widths along the widest path, each times its input's scale
    (the image's pixels per map pixel), plus one output pixel for nearest-upsampling's rounding."""
    nodes, _ = needed(model.graph, [output], inputs)
    radius = {name: 0.0 for name in inputs}
    for node in nodes:
        reach = max((radius.get(i, 0.0) for i in node.input if i), default=0.0)
        if node.op_type == "Conv":
            kernel = next((a.ints for a in node.attribute if a.name == "kernel_shape"), None)
            dilation = max(next((a.ints for a in node.attribute if a.name == "dilations"), [1]))
            if kernel is None:
                raise ValueError(f"Conv node {node.name or node.output[0]} has no kernel_shape attribute")
            reach += (max(kernel) // 2) * dilation * scales[node.input[0]]
        elif node.op_type == "Resize":
            reach += scales[node.input[0]]
        for out in node.output:
            radius[out] = reach
    return radius[output]
