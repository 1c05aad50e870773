"""Exact rewrites of an exported net's graph that onnxruntime's CPU kernels run faster.

Two layers of the Johnson net are slow on onnxruntime's CPU execution provider for reasons of
shape, not of arithmetic (profiled at 512 px, width 32, AVX2; numbers in ``docs/cpu.md``):

- **The last 9x9 conv to 3 channels** (a quarter of the run): the blocked NCHWc conv kernel works
  on 8 (AVX2) or 16 (AVX-512) output channels at a time and reuses each input load across up to 4
  such blocks; with 3 output channels it pads to 8 and reuses nothing. ``_split_taps`` writes it as
  a 1xK conv to 3K channels (one per output channel and kernel row, a well-shaped conv with the
  same multiply-adds) followed by the sum of K row-shifted slices.
- **Nearest 2x upsampling, reflect pad 1, 3x3 conv** (the two upsampling layers): each of the four
  output phases of that composite only sees a 2x2 neighbourhood of the low-resolution input, so it
  is one conv with 2x2 kernels on the low-resolution map, 4x the output channels (4/9 of the
  multiply-adds), and a ``DepthToSpace`` that interleaves the phases. Reflect padding by 1 of the
  upsampled map equals edge padding by 1 of the input before upsampling, so the pad moves too.

Both are exact up to float rounding (summed weights, another summation order: ~1e-6 on [0, 1]
outputs). A pattern that does not match exactly (other modes, strides, shared intermediate
tensors) is left alone, so any exported graph stays valid. Torch-free: numpy and onnx only.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

log = logging.getLogger(__name__)

SMALL_OUTPUT = 8
"""Convs with fewer output channels than this (and a kernel taller than 1) get ``_split_taps``."""
_END = np.iinfo(np.int64).max


@dataclass
class RewriteReport:
    """What ``rewrite_for_cpu`` changed: counts per rewrite name (``{"split_taps": 1, "phase_upsample": 2}``)."""

    counts: Counter = field(default_factory=Counter)

    def __bool__(self) -> bool:
        return bool(self.counts)

    def __str__(self) -> str:
        return ", ".join(f"{name} x{n}" for name, n in sorted(self.counts.items())) or "nothing rewritten"


class _Graph:
    """Index of a graph: producers, consumers, initializers as arrays, and fresh names."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.inits = {t.name: t for t in graph.initializer}
        self.producer = {out: node for node in graph.node for out in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in graph.node:
            for name in node.input:
                self.consumers[name].append(node)
        self.outputs = {o.name for o in graph.output}
        self._taken = set(self.inits) | set(self.producer) | {i.name for i in graph.input}
        self._taken |= {node.name for node in graph.node}
        self.new_inits: list[onnx.TensorProto] = []

    def array(self, name: str) -> np.ndarray | None:
        return numpy_helper.to_array(self.inits[name]) if name in self.inits else None

    def only_consumer(self, tensor: str) -> onnx.NodeProto | None:
        users = self.consumers.get(tensor, [])
        return users[0] if len(users) == 1 and tensor not in self.outputs else None

    def name(self, base: str) -> str:
        candidate, n = base, 0
        while candidate in self._taken:
            n += 1
            candidate = f"{base}_{n}"
        self._taken.add(candidate)
        return candidate

    def const(self, base: str, value: np.ndarray) -> str:
        name = self.name(base)
        self.new_inits.append(numpy_helper.from_array(value, name))
        return name


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _plain_conv(g: _Graph, conv: onnx.NodeProto) -> tuple[np.ndarray, np.ndarray] | None:
    """(weight, bias) of a stride-1, unpadded, ungrouped 2-d conv with constant weights, else None."""
    if conv.op_type != "Conv" or conv.domain not in ("", "ai.onnx") or len(conv.input) < 2:
        return None
    a = _attrs(conv)
    weight = g.array(conv.input[1])
    if weight is None or weight.ndim != 4 or weight.dtype != np.float32:
        return None
    if a.get("group", 1) != 1 or any(s != 1 for s in a.get("strides", [1, 1])) \
            or any(d != 1 for d in a.get("dilations", [1, 1])) or any(p != 0 for p in a.get("pads", [0] * 4)) \
            or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        return None
    bias = g.array(conv.input[2]) if len(conv.input) > 2 and conv.input[2] else np.zeros(weight.shape[0], np.float32)
    return (weight, bias) if bias is not None else None


def _pad_of(g: _Graph, node: onnx.NodeProto | None, mode: bytes) -> int | None:
    """The symmetric spatial pad of a ``Pad`` node of ``mode`` on an NCHW tensor, else None."""
    if node is None or node.op_type != "Pad" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
        return None
    if _attrs(node).get("mode", b"constant") != mode or (len(node.input) > 3 and node.input[3]):
        return None
    pads = g.array(node.input[1])
    if pads is None or pads.shape != (8,):
        return None
    p = int(pads[2])
    return p if pads.tolist() == [0, 0, p, p, 0, 0, p, p] else None


def _is_nearest_2x(g: _Graph, node: onnx.NodeProto | None) -> bool:
    if node is None or node.op_type != "Resize" or node.domain not in ("", "ai.onnx") or len(node.input) < 3:
        return False
    a = _attrs(node)
    scales = g.array(node.input[2])
    return (a.get("mode") == b"nearest" and a.get("coordinate_transformation_mode") == b"asymmetric"
            and a.get("nearest_mode") == b"floor" and scales is not None
            and scales.tolist() == [1.0, 1.0, 2.0, 2.0] and (len(node.input) < 4 or not node.input[3]))


def _split_taps(g: _Graph, conv: onnx.NodeProto, weight: np.ndarray, bias: np.ndarray) -> list[onnx.NodeProto]:
    """KxK conv to O channels -> 1xK conv to O*K channels + sum of K row-shifted strided slices."""
    out_ch, in_ch, kh, kw = weight.shape
    rows = np.ascontiguousarray(weight.transpose(0, 2, 1, 3).reshape(out_ch * kh, in_ch, 1, kw))
    row_bias = np.zeros((out_ch, kh), np.float32)
    row_bias[:, 0] = bias  # the bias once, on the first row's channel
    stem = conv.output[0]
    taps = g.name(f"{stem}_rows")
    nodes = [helper.make_node("Conv", [conv.input[0], g.const(f"{stem}_rows_w", rows),
                                       g.const(f"{stem}_rows_b", row_bias.reshape(-1))],
                              [taps], name=g.name(f"{conv.name}_rows"), kernel_shape=[1, kw])]
    axes = g.const(f"{stem}_axes", np.array([1, 2], np.int64))
    steps = g.const(f"{stem}_steps", np.array([kh, 1], np.int64))
    shifted = []
    for i in range(kh):
        # channels i, kh + i, ... (row i of every output channel), rows i .. i + H - 1
        end = i - (kh - 1) if i < kh - 1 else _END
        starts = g.const(f"{stem}_s{i}", np.array([i, i], np.int64))
        ends = g.const(f"{stem}_e{i}", np.array([out_ch * kh, end], np.int64))
        shifted.append(g.name(f"{stem}_row{i}"))
        nodes.append(helper.make_node("Slice", [taps, starts, ends, axes, steps], [shifted[-1]],
                                      name=g.name(f"{conv.name}_row{i}")))
    nodes.append(helper.make_node("Sum", shifted, [stem], name=g.name(f"{conv.name}_sum")))
    return nodes


def _phase_weights(weight: np.ndarray) -> np.ndarray:
    """3x3 conv after nearest 2x upsampling -> (4*O, C, 2, 2): one 2x2 kernel per output phase.

    Output phase (py, px) at low-res position (y, x) reads the edge-padded input at rows
    y + py, y + py + 1: phase 0 sums kernel rows (0 | 1 + 2), phase 1 rows (0 + 1 | 2); same for columns.
    """
    def taps(w: np.ndarray, phase: int, axis: int) -> np.ndarray:
        w0, w1, w2 = np.moveaxis(w, axis, 0)
        pair = (w0, w1 + w2) if phase == 0 else (w0 + w1, w2)
        return np.moveaxis(np.stack(pair), 0, axis)

    phases = [taps(taps(weight.astype(np.float64), py, 2), px, 3) for py in (0, 1) for px in (0, 1)]
    return np.concatenate(phases).astype(np.float32)


def _phase_upsample(g: _Graph, resize: onnx.NodeProto, conv: onnx.NodeProto, weight: np.ndarray,
                    bias: np.ndarray) -> list[onnx.NodeProto]:
    """Resize(nearest 2x) -> Pad(reflect 1) -> Conv3x3 as Pad(edge 1) -> Conv2x2 (4x channels) -> phases."""
    out_ch = weight.shape[0]
    stem = conv.output[0]
    padded, both = g.name(f"{stem}_edge"), g.name(f"{stem}_phases")
    pads = g.const(f"{stem}_edge_pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))
    nodes = [helper.make_node("Pad", [resize.input[0], pads], [padded], name=g.name(f"{conv.name}_edge"), mode="edge"),
             helper.make_node("Conv", [padded, g.const(f"{stem}_phase_w", _phase_weights(weight)),
                                       g.const(f"{stem}_phase_b", np.tile(bias, 4))],
                              [both], name=g.name(f"{conv.name}_phases"), kernel_shape=[2, 2])]
    # the 2x2 conv of the (H+2)x(W+2) input is (H+1)x(W+1); phase (py, px) is its window at (py, px)
    axes = g.const(f"{stem}_axes", np.array([1, 2, 3], np.int64))
    parts = []
    for p, (py, px) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        starts = g.const(f"{stem}_p{p}_s", np.array([p * out_ch, py, px], np.int64))
        ends = g.const(f"{stem}_p{p}_e", np.array([(p + 1) * out_ch, _END if py else -1, _END if px else -1], np.int64))
        parts.append(g.name(f"{stem}_p{p}"))
        nodes.append(helper.make_node("Slice", [both, starts, ends, axes], [parts[-1]],
                                      name=g.name(f"{conv.name}_p{p}")))
    stacked = g.name(f"{stem}_stacked")
    nodes += [helper.make_node("Concat", parts, [stacked], name=g.name(f"{conv.name}_concat"), axis=1),
              helper.make_node("DepthToSpace", [stacked], [stem], name=g.name(f"{conv.name}_d2s"),
                               blocksize=2, mode="DCR")]
    return nodes


def rewrite_for_cpu(model: onnx.ModelProto) -> tuple[onnx.ModelProto, RewriteReport]:
    """A copy of ``model`` with the CPU rewrites applied where their patterns match exactly.

    Needs opset >= 13 (Slice with steps, Sum, DCR DepthToSpace); an older model is returned unchanged.
    """
    report = RewriteReport()
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    if opset < 13:
        log.info("opset %d < 13: no CPU rewrite", opset)
        return out, report
    g = _Graph(out.graph)
    replace: dict[int, list[onnx.NodeProto]] = {}  # id of the node whose place the new nodes take
    drop: set[int] = set()
    for conv in list(out.graph.node):
        plain = _plain_conv(g, conv)
        if plain is None:
            continue
        weight, bias = plain
        pad = g.producer.get(conv.input[0])
        resize = g.producer.get(pad.input[0]) if pad is not None and pad.input else None
        if (weight.shape[2:] == (3, 3) and _pad_of(g, pad, b"reflect") == 1 and _is_nearest_2x(g, resize)
                and g.only_consumer(pad.output[0]) is conv and g.only_consumer(resize.output[0]) is pad):
            replace[id(conv)] = _phase_upsample(g, resize, conv, weight, bias)
            drop |= {id(pad), id(resize)}
            report.counts["phase_upsample"] += 1
        elif weight.shape[0] < SMALL_OUTPUT and weight.shape[2] > 1:
            replace[id(conv)] = _split_taps(g, conv, weight, bias)
            report.counts["split_taps"] += 1
    if not report:
        return out, report
    nodes = []
    for node in out.graph.node:
        if id(node) in drop:
            continue
        nodes.extend(replace.get(id(node), [node]))
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    out.graph.initializer.extend(g.new_inits)
    used = {name for node in out.graph.node for name in node.input}
    kept = [t for t in out.graph.initializer if t.name in used]
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept)
    onnx.checker.check_model(out)
    log.debug("CPU rewrite: %s", report)
    return out, report
