"""Running one large image in stages, so that memory grows by bytes, not hundreds of bytes, per pixel.

Why: a whole-image run holds the net's full-resolution maps at once (about 260-570 bytes per pixel
measured on CPU, see ``benchmarks/RESULTS.md``, "Serving memory"). Plain tiles would change the look
tile to tile, since every instance norm would see only its tile; statistics from a shrunk copy
change it too (the nets are not scale-invariant: mean |diff| 13/255 at half size, measured).

So ``plan_stages`` walks the norms in graph order. Each *stage* runs one piece of the
fixed-statistics graph (``onnx_norms``) tile by tile over the whole image, reading the image or
*maps* stored at the net's coarsest scale (1/4 side, float16), and

- measures the input of the next norm (mean and variance merged over tiles: the whole image's), or
- stores a map: a norm's input, or a *cut* (a tensor from which the rest of the net follows alone,
  such as a residual block's output), written into the map it replaces where the shapes agree, or
- writes the final uint8 image.

Every norm thus uses the statistics of the whole image, as in one whole-image run (up to float16
rounding of the stored maps), for about twice the compute. Memory: the uint8 image and result, at
most ``max_maps`` stored maps, and one tile's working set (about ``tile_bytes``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from styletrain.images import array_to_pixels, pixels_to_array
from styletrain.runtime.base import NonFiniteOutput
from styletrain.runtime.onnx_norms import (
    NormStat, activations, fixed_stats_model, needed, norm_stats, producers, receptive_radius, segment,
)
from styletrain.runtime.ort_env import session_options
from styletrain.runtime.tiling import ChannelStats, Tile, tiles

IMAGE, WEIGHTS, OUTPUT = "image", "style_weights", "output"
PROBE_SIDE = 64
"""Side of the image a plan is probed with, to learn every tensor's scale and channel count."""
MAP_DTYPE = np.float16
HALF = ".f16"
"""Suffix of a stage's float16 inputs and outputs (stored maps)."""
MIN_TILE = 64


STAGED_IMAGE_BYTES_PER_PIXEL = 6
"""What a staged run holds per pixel besides its maps: the uint8 image and the uint8 result."""
TILE_WORKING_FACTOR = 3.0
"""Peak of a staged run's tile work (onnxruntime, float copies, statistics) over ``tile_bytes``:
measured 2.5-3.0 (16-48 MiB, multistyle.onnx at 2000 px)."""
WHOLE_RUN_FACTOR = 2.5
"""Peak of a whole-image ``run_pixels`` per pixel over the net's largest node's bytes per pixel:
measured 2.2-2.4 for multistyle.onnx at 1024 px (onnxruntime's arena rounds up; float input and output)."""


@dataclass(frozen=True)
class Staging:
    """Which images run in stages, and how much one tile may hold."""

    min_pixels: int = 1024 * 1024
    """Images of more pixels than this run in stages; smaller ones whole (faster; the same result)."""
    tile_bytes: int = 16 * 2**20
    """Aim for a tile's tensors (float32, largest node's inputs and outputs, doubled) to fit in this.
    Larger tiles were no faster (measured 16-48 MiB at 2000 px) and held more."""

    def applies(self, height: int, width: int) -> bool:
        return height * width > self.min_pixels


DEFAULT_STAGING = Staging()


class Unsupported(ValueError):
    """A graph the stage planner does not understand: the model runs whole-image only."""


@dataclass(frozen=True)
class Stage:
    """One pass over the image: ``model`` computes ``output`` from ``inputs`` (stored maps, or the image),
    tile by tile, in tiles of ``tile`` image pixels that reach ``margin`` pixels past what they keep."""

    model: bytes
    inputs: tuple[str, ...]
    output: str
    channels: int
    scale: int
    """Image pixels per output pixel (1, 2 or 4)."""
    margin: int
    tile: int
    measures: NormStat | None
    """The norm whose input ``output`` is, when this stage measures its statistics."""
    store: bool
    into: str | None
    """The stored map ``output`` overwrites (same shape), or None for a new one."""
    drop: tuple[str, ...]
    """Stored maps no later stage reads, freed after this one."""
    final: bool


@dataclass(frozen=True)
class StagePlan:
    """The stages of a model, and what they cost in memory."""

    stages: tuple[Stage, ...]
    coarse: int
    """Image pixels per pixel of a stored map (the net's coarsest scale, 4)."""
    map_bytes_per_pixel: float
    """Bytes per image pixel of the stored maps alive at once, at most."""
    node_bytes_per_pixel: float
    """float32 bytes per image pixel that the net's largest node reads and writes (a whole-image run
    holds a small multiple of it)."""


def plan_stages(model: onnx.ModelProto, *, tile_bytes: int = 16 * 2**20, max_maps: int = 2) -> StagePlan:
    """The stages that run ``model`` (an export) over a large image with whole-image norm statistics.

    Raises ``Unsupported`` when the graph is not a chain of convolutions and instance norms ending
    in crop and clip (any exported ``TransformerNet`` is).
    """
    norms = norm_stats(model)
    if not norms:
        raise Unsupported("the model has no InstanceNormalization: nothing to keep whole-image")
    fixed = _batch_from_weights(fixed_stats_model(model))
    graph = fixed.graph
    final = _final_tensor(fixed)
    acts = activations(graph, IMAGE)
    scales, channels = _probe(fixed, sorted(acts))
    coarse = int(max(scales.values()))
    if any(s < 1 or coarse % s for s in map(int, scales.values())) or any(not s.is_integer() for s in scales.values()):
        raise Unsupported(f"tensor scales {sorted(set(scales.values()))} are not divisors of {coarse}")
    order = {out: i for i, node in enumerate(graph.node) for out in node.output}
    order[IMAGE] = -1
    cuts = sorted((t for t in acts if t != IMAGE and scales[t] == coarse and _is_cut(graph, t, final, acts)),
                  key=order.__getitem__)
    norm_of = {n.input: n for n in norms}
    stages: list[Stage] = []
    stored: list[str] = []
    known: set[str] = set()

    def add(output: str, *, store: bool, into: str | None = None) -> None:
        sources = stored or [IMAGE]
        _, read = needed(graph, [output], sources)
        inputs = tuple(s for s in sources if s in read)
        unknown = [n.input for n in norms if {n.mean, n.var} & read and n.input not in known]
        if not inputs or unknown:
            raise Unsupported(f"cannot compute {output} from {sources} (norm statistics missing for {unknown})")
        measures = norm_of.get(output) if output not in known else None
        radius = receptive_radius(fixed, inputs, output, scales)
        margin = _align_up(math.ceil(radius), coarse)
        tile = _tile_side(graph, inputs, output, scales, channels, tile_bytes, margin, coarse)
        shapes = {i: [1, channels[i], "height", "width"] for i in inputs}
        seg = segment(fixed, shapes, {output: [1, channels[output], "out_height", "out_width"]})
        _half_io(seg, [i for i in inputs if i != IMAGE], output if store else None)
        stages.append(Stage(seg.SerializeToString(), inputs, output, channels[output], int(scales[output]),
                            margin, tile, measures, store, into, (), output == final))
        if measures is not None:
            known.add(output)

    def advance() -> None:
        """Store the latest cut that the known statistics reach, replacing the stored maps."""
        while True:
            last = max((order[s] for s in stored), default=-1)
            reachable = [c for c in cuts
                         if order[c] > last and _norms_read(graph, c, stored or [IMAGE], norms) <= known]
            if not reachable:
                return
            cut = reachable[-1]
            into = next((s for s in stored if channels[s] == channels[cut]), None)
            add(cut, store=True, into=into)
            _drop_after(stages, [s for s in stored if s != into])
            stored[:] = [cut]

    for norm in norms:
        if norm.input in known:
            continue
        store = scales[norm.input] == coarse and len(stored) < max_maps
        add(norm.input, store=store)
        if store:
            stored.append(norm.input)
        advance()
    add(final, store=False)
    _drop_after(stages, list(stored))
    map_bytes = _peak_map_channels(stages) * np.dtype(MAP_DTYPE).itemsize / coarse**2
    node_bytes = _node_bytes_per_pixel(graph.node, scales, channels)
    return StagePlan(tuple(stages), coarse, map_bytes, node_bytes)


def run_bytes(plan: StagePlan, staging: Staging | None, height: int, width: int) -> int:
    """Estimated peak memory (bytes) of running one ``height`` x ``width`` image, whole or in stages."""
    pixels = height * width
    if staging is not None and staging.applies(height, width):
        per_pixel = plan.map_bytes_per_pixel + STAGED_IMAGE_BYTES_PER_PIXEL
        return int(pixels * per_pixel + TILE_WORKING_FACTOR * staging.tile_bytes)
    return int(pixels * WHOLE_RUN_FACTOR * plan.node_bytes_per_pixel)


def _peak_map_channels(stages: Sequence[Stage]) -> int:
    """The most channels of stored maps alive at once while the stages run, as ``_run_stage`` keeps
    them: a new map counts while it is written, one written over another takes its place."""
    alive: dict[str, int] = {}
    peak = 0
    for stage in stages:
        if stage.store:
            if stage.into:
                del alive[stage.into]
            alive[stage.output] = stage.channels
        peak = max(peak, sum(alive.values()))
        for name in stage.drop:
            alive.pop(name, None)
    return peak


def _align_up(value: int, align: int) -> int:
    return -(-value // align) * align


def _half_io(model: onnx.ModelProto, inputs: Sequence[str], output: str | None) -> None:
    """Read the stored maps ``inputs`` as float16 (``{name}.f16``) and also write ``output`` as float16:
    onnxruntime converts several times faster than numpy."""
    for info in model.graph.input:
        if info.name in inputs:
            info.name += HALF
            info.type.tensor_type.elem_type = onnx.TensorProto.FLOAT16
    casts = [helper.make_node("Cast", [name + HALF], [name], to=onnx.TensorProto.FLOAT) for name in inputs]
    nodes = [*casts, *model.graph.node]
    if output is not None:
        nodes.append(helper.make_node("Cast", [output], [output + HALF], to=onnx.TensorProto.FLOAT16))
        model.graph.output.append(helper.make_tensor_value_info(output + HALF, onnx.TensorProto.FLOAT16, None))
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def _batch_from_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """Take the batch size from the style weights (B, N) rather than the image, where the graph reads it
    (conditional nets expand their weights to the batch): a stage from a stored map has no image."""
    if WEIGHTS not in {i.name for i in model.graph.input}:
        return model
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Shape" and node.input[0] == IMAGE and attrs.get("start") == 0 and attrs.get("end") == 1:
            node.input[0] = WEIGHTS
    return model


def _final_tensor(model: onnx.ModelProto) -> str:
    """The last convolution's output: after it, the graph may only crop (Slice) and clip to [0, 1]."""
    graph = model.graph
    convs = [n for n in graph.node if n.op_type == "Conv"]
    if not convs:
        raise Unsupported("the model has no convolution")
    final = _split_taps_sum(graph, convs[-1].output[0]) or convs[-1].output[0]
    tail, _ = needed(graph, [OUTPUT], [final])
    acts = activations(graph, final)
    ops = {n.op_type for n in tail if acts.intersection(n.input)}
    if not ops <= {"Slice", "Clip", "Identity"}:
        raise Unsupported(f"after the last convolution the graph runs {sorted(ops)}; expected crop and clip only")
    for node in tail:
        if node.op_type == "Clip" and _constants(graph, node.input[1:]) != [0.0, 1.0]:
            raise Unsupported("the output is clipped to other bounds than [0, 1]")
    return final


def _split_taps_sum(graph: onnx.GraphProto, conv_output: str) -> str | None:
    """The sum that completes the last convolution in the CPU rewrite (``cpu_graph._split_taps``: a 1xK
    conv, then K row-shifted slices summed), or None. Its reach is the KxK conv's: K // 2 rows each way
    through the shifts, as many columns through the 1xK kernel (``receptive_radius`` counts the larger)."""
    readers = [n for n in graph.node if conv_output in n.input]
    if not readers or any(n.op_type != "Slice" for n in readers):
        return None
    shifted = {n.output[0] for n in readers}
    return next((n.output[0] for n in graph.node if n.op_type == "Sum" and set(n.input) == shifted), None)


def _constants(graph: onnx.GraphProto, names: Sequence[str]) -> list[float | None]:
    """Scalar values of initializers or Constant nodes (None where not a constant)."""
    inits = {i.name: i for i in graph.initializer}
    made_by = producers(graph)
    values: list[float | None] = []
    for name in names:
        tensor = inits.get(name)
        node = made_by.get(name)
        if tensor is None and node is not None and node.op_type == "Constant":
            tensor = next((a.t for a in node.attribute if a.name == "value"), None)
        values.append(float(numpy_helper.to_array(tensor).reshape(-1)[0]) if tensor is not None else None)
    return values


def _probe(model: onnx.ModelProto, tensors: list[str]) -> tuple[dict[str, float], dict[str, int]]:
    """Run the model once on a small image: every tensor's scale (image pixels per pixel) and channel count."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for t in tensors:
        probe.graph.node.append(helper.make_node("Shape", [t], [f"{t}.probe_shape"]))
        probe.graph.output.append(helper.make_tensor_value_info(f"{t}.probe_shape", onnx.TensorProto.INT64, [4]))
    session = ort.InferenceSession(probe.SerializeToString(), sess_options=session_options(),
                                   providers=["CPUExecutionProvider"])
    names = [f"{t}.probe_shape" for t in tensors]
    sides = (PROBE_SIDE, 2 * PROBE_SIDE)
    first, second = (dict(zip(tensors, session.run(names, _probe_feeds(session, side)))) for side in sides)
    if any(len(s) != 4 for s in first.values()):
        raise Unsupported("an image-dependent tensor is not 4-D")
    # Two sizes, so that padded tensors (a few pixels larger) get their true scale too.
    scales = {t: (sides[1] - sides[0]) / max(1, int(second[t][2]) - int(first[t][2])) for t in tensors}
    return scales, {t: int(s[1]) for t, s in first.items()}


def _probe_feeds(session: Any, side: int) -> dict[str, np.ndarray]:
    """Inputs for a probe run: a grey image, uniform style weights, unit statistics."""
    feeds: dict[str, np.ndarray] = {}
    for info in session.get_inputs():
        if info.name == IMAGE:
            feeds[IMAGE] = np.full((1, 3, side, side), 0.5, np.float32)
        elif info.name == WEIGHTS:
            feeds[WEIGHTS] = np.full((1, info.shape[1]), 1.0 / info.shape[1], np.float32)
        elif len(info.shape) == 1 and isinstance(info.shape[0], int):  # a norm statistic (C,)
            fill = 1.0 if info.name.endswith(".var") else 0.0
            feeds[info.name] = np.full(info.shape, fill, np.float32)
        else:
            raise Unsupported(f"input {info.name} has no fixed channel count")
    return feeds


def _is_cut(graph: onnx.GraphProto, tensor: str, final: str, acts: set[str]) -> bool:
    """Whether ``final`` follows from ``tensor`` alone (no other image-dependent tensor is read)."""
    nodes, read = needed(graph, [final], [tensor])
    made = {out for node in nodes for out in node.output}
    return not (read - made) & acts - {tensor}


def _norms_read(graph: onnx.GraphProto, output: str, sources: Sequence[str], norms: list[NormStat]) -> set[str]:
    """The norms (by input tensor) whose statistics computing ``output`` from ``sources`` reads."""
    _, read = needed(graph, [output], sources)
    return {n.input for n in norms if {n.mean, n.var} & read}


def _drop_after(stages: list[Stage], maps: Sequence[str]) -> None:
    """Mark ``maps`` as freed once the last stage so far has run."""
    if maps and stages:
        last = stages[-1]
        stages[-1] = dataclasses.replace(last, drop=last.drop + tuple(m for m in maps if m != last.output))


def _tile_side(graph: onnx.GraphProto, inputs: Sequence[str], output: str, scales: dict[str, float],
               channels: dict[str, int], tile_bytes: int, margin: int, align: int) -> int:
    """A tile side (image pixels) whose working set is about ``tile_bytes``: the largest node's inputs
    and outputs, as float32, times 2 (convolution workspace, allocator rounding)."""
    nodes, _ = needed(graph, [output], inputs)
    side = int(math.sqrt(tile_bytes / (2 * _node_bytes_per_pixel(nodes, scales, channels)))) // align * align
    return max(side, MIN_TILE, 3 * margin + align)


def _node_bytes_per_pixel(nodes: Iterable[onnx.NodeProto], scales: dict[str, float], channels: dict[str, int]) -> float:
    """The most float32 bytes per image pixel one node reads and writes."""
    return max((sum(4 * channels[t] / scales[t] ** 2 for t in (*n.input, *n.output) if t in scales)
                for n in nodes), default=4.0)


RunSession = Callable[[Any, list[str], dict[str, np.ndarray], bool], list[np.ndarray]]
"""How a stage's session is run: (session, output names, feeds, last tile of the stage) -> the outputs
(raises when cancelled)."""


def run_stages(plan: StagePlan, sessions: Sequence[Any], run: RunSession, pixels: np.ndarray,
               feeds: dict[str, np.ndarray]) -> np.ndarray:
    """uint8 (H, W, 3) -> the stylized uint8 (H, W, 3), stage by stage; ``feeds`` holds the style weights."""
    state = _State(pixels, (_align_up(pixels.shape[0], plan.coarse), _align_up(pixels.shape[1], plan.coarse)),
                   plan.coarse, dict(feeds), np.empty_like(pixels))
    for stage, session in zip(plan.stages, sessions):
        _run_stage(stage, session, run, state)
    return state.out


@dataclass
class _State:
    """What the stages of one image share: the image, stored maps, measured statistics, the result."""

    pixels: np.ndarray
    padded: tuple[int, int]
    """The image's sides rounded up to ``coarse``, as the net pads it."""
    coarse: int
    feeds: dict[str, np.ndarray]
    """Style weights, then each norm's statistics once measured."""
    out: np.ndarray
    maps: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


def _run_stage(stage: Stage, session: Any, run: RunSession, state: _State) -> None:
    """One stage over every tile: measure, store (maybe over an input map) or write the result."""
    c, s = state.coarse, stage.scale
    wanted = {i.name for i in session.get_inputs()}
    fixed = {k: v for k, v in state.feeds.items() if k in wanted}
    fetch = ([stage.output + HALF] if stage.store else []) + \
        ([stage.output] if stage.measures is not None or not stage.store else [])
    measured = ChannelStats() if stage.measures is not None else None
    target = None
    if stage.store:
        target = state.maps[stage.into] if stage.into else np.empty(
            (stage.channels, state.padded[0] // c, state.padded[1] // c), MAP_DTYPE)
    pending: list[list[tuple[tuple[slice, slice], np.ndarray]]] = []
    rows = list(tiles(*state.padded, stage.tile, stage.margin, c))
    for index, row in enumerate(rows):
        written = []
        for tile in row:
            inputs = {(name if name == IMAGE else name + HALF): _read(name, state, tile) for name in stage.inputs}
            last_tile = index == len(rows) - 1 and tile is row[-1]
            results = dict(zip(fetch, run(session, fetch, {**inputs, **fixed}, last_tile)))
            kept_rows = slice((tile.rows.keep_start - tile.rows.start) // s,
                              (tile.rows.keep_stop - tile.rows.start) // s)
            kept_cols = slice((tile.cols.keep_start - tile.cols.start) // s,
                              (tile.cols.keep_stop - tile.cols.start) // s)
            if measured is not None:
                measured.add(results[stage.output][0, :, kept_rows, kept_cols])
            if stage.final:
                _write_result(results[stage.output][0, :, kept_rows, kept_cols], tile, state)
            elif target is not None:
                where = (slice(tile.rows.keep_start // c, tile.rows.keep_stop // c),
                         slice(tile.cols.keep_start // c, tile.cols.keep_stop // c))
                written.append((where, results[stage.output + HALF][0, :, kept_rows, kept_cols]))
        pending.append(written)
        # A map written over is read up to ``margin`` rows past each tile: a row of tiles is written
        # only once no later row reads the rows it keeps.
        next_start = rows[index + 1][0].rows.start if index + 1 < len(rows) else state.padded[0]
        while pending and (not pending[0] or stage.into is None or pending[0][0][0][0].stop * c <= next_start):
            for where, values in pending.pop(0):
                target[(slice(None), *where)] = values
    if measured is not None:
        state.feeds[stage.measures.mean], state.feeds[stage.measures.var] = measured.mean_var()
    if target is not None:
        state.maps[stage.output] = target
        if stage.into:
            del state.maps[stage.into]
    for name in stage.drop:
        state.maps.pop(name, None)


def _write_result(kept: np.ndarray, tile: Tile, state: _State) -> None:
    """A tile's kept float result into the uint8 image, cropped to the image (the net pads it to ``coarse``)."""
    if not np.isfinite(kept).all():
        raise NonFiniteOutput("the model produced non-finite values")
    height, width = state.pixels.shape[:2]
    rows = slice(tile.rows.keep_start, min(tile.rows.keep_stop, height))
    cols = slice(tile.cols.keep_start, min(tile.cols.keep_stop, width))
    array_to_pixels(kept[:, :rows.stop - rows.start, :cols.stop - cols.start], out=state.out[rows, cols])


def _read(name: str, state: _State, tile: Tile) -> np.ndarray:
    """A tile's window of the image (float32 (1, 3, h, w), cut at the image's edge) or of a stored
    map (float16 (1, C, h, w))."""
    if name == IMAGE:
        return pixels_to_array(state.pixels[tile.rows.start:tile.rows.stop, tile.cols.start:tile.cols.stop])
    c = state.coarse
    window = state.maps[name][:, tile.rows.start // c:tile.rows.stop // c, tile.cols.start // c:tile.cols.stop // c]
    return np.ascontiguousarray(window)[None]
