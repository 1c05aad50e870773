"""Static int8 quantisation of an exported model for onnxruntime's CPU provider: ``quantize_model``.

``NAME.onnx`` (an fp32 export) becomes ``NAME.int8.onnx`` beside it, in these steps:

1. **Equalise** every conv that feeds an instance norm: its bias is dropped and each output
   channel scaled to unit standard deviation over the calibration photos. Instance norm removes
   both (exactly for the bias; for the scale up to its epsilon, ~0.02/255 on the shipped models),
   and it matters: onnxruntime's int8 conv writes 8-bit outputs with one scale per tensor, and a
   channel with a small spread would otherwise keep a few levels, which the norm then amplifies.
2. **Rewrite** the graph for the CPU (``styletrain.runtime.cpu_graph``; exact).
3. **Quantise** the chosen convs (``LAYERS``) statically in QDQ format: weights int8, symmetric,
   per output channel; activations uint8, per tensor, from MinMax calibration on the photos.
   onnxruntime fuses each DequantizeLinear-Conv-QuantizeLinear into an int8 ``QLinearConv``.
   The first conv (3 input channels: slower in int8 and the most sensitive), the norms and the
   residual additions stay float.

The result is checked against the fp32 model on held-out photos (mean |difference| on the 0-255
scale, stored in the metadata with the calibration settings). Whether int8 runs faster depends
on the CPU: see ``styletrain.runtime.variants``, which picks the file to load.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from styletrain.errors import UserError
from styletrain.files import check_writable
from styletrain.images import open_image, resize_short_side
from styletrain.export import set_metadata, write_model
from styletrain.runtime.cpu_graph import rewrite_for_cpu
from styletrain.runtime.onnx_backend import CPU, IMAGE, OUTPUT, WEIGHTS, load_model, read_metadata
from styletrain.runtime.ort_env import session_options
from styletrain.runtime.variants import variant_path

log = logging.getLogger(__name__)

LAYERS = ("residual", "all")
"""Which convs become int8. ``residual``: the residual blocks' convs, at a quarter of the
resolution with the most channels (half the multiply-adds; the least error per saved ms).
``all``: every conv but the first (faster still, about twice the error; see ``docs/cpu.md``)."""
DEFAULT_LAYERS = "residual"
DEFAULT_COUNT = 32
DEFAULT_SIDE = 256
CHECK_COUNT = 4
"""Held-out photos (after the calibration ones) on which the int8 model is compared with fp32."""
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def calibration_photos(folder: str | Path, count: int) -> list[Path]:
    """The first ``count`` photos of ``folder`` by name (and ``CHECK_COUNT`` more, when there are)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"calibration folder not found: {folder}")
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not photos:
        raise UserError(f"no {'/'.join(IMAGE_SUFFIXES)} images in calibration folder {folder}")
    return photos[: count + CHECK_COUNT]


def photo_array(path: Path, side: int) -> np.ndarray:
    """A photo as float32 (1, 3, side, side) in [0, 1]: short side resized to ``side``, centre crop."""
    image = resize_short_side(open_image(path, min_side=1), side)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    array = np.asarray(image.crop((left, top, left + side, top + side)), dtype=np.float32) / 255.0
    return np.ascontiguousarray(array.transpose(2, 0, 1)[None])


def calibration_feeds(
    photos: Sequence[Path], side: int, num_styles: int, conditional: bool
) -> list[dict[str, np.ndarray]]:
    """One feed per photo; a multi-style net cycles through its styles (and a uniform blend)."""
    rows = np.eye(num_styles, dtype=np.float32)
    if num_styles > 1:
        rows = np.concatenate([rows, np.full((1, num_styles), 1.0 / num_styles, np.float32)])
    feeds = []
    for k, photo in enumerate(photos):
        feed = {IMAGE: photo_array(photo, side)}
        if conditional:
            feed[WEIGHTS] = rows[k % len(rows)][None]
        feeds.append(feed)
    return feeds


def _session(model: onnx.ModelProto, threads: int | None = None) -> Any:
    import onnxruntime as ort

    options = session_options(threads)
    options.log_severity_level = 3  # no warnings about initializers the optimiser drops
    return ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=[CPU])


def equalize_channels(model: onnx.ModelProto, feeds: Sequence[dict[str, np.ndarray]]) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` where every conv feeding only an ``InstanceNormalization`` has no bias and
    unit-std output channels (measured on ``feeds``). Returns the model and the number of convs changed."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {t.name: t for t in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    convs = [n for n in graph.node if n.op_type == "Conv" and len(n.input) > 1 and n.input[1] in inits
             and [c.op_type for c in consumers.get(n.output[0], [])] == ["InstanceNormalization"]]
    if not convs:
        return out, 0
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for conv in convs:
        probe.graph.output.append(onnx.helper.make_tensor_value_info(conv.output[0], onnx.TensorProto.FLOAT, None))
    session = _session(probe)
    names = [conv.output[0] for conv in convs]
    variance = [np.zeros(0)] * len(convs)
    for feed in feeds:
        for k, value in enumerate(session.run(names, feed)):
            v = value.astype(np.float64).var(axis=(2, 3)).mean(axis=0)
            variance[k] = v if variance[k].size == 0 else variance[k] + v
    for conv, var in zip(convs, variance):
        std = np.sqrt(var / len(feeds))
        scale = 1.0 / np.maximum(std, 1e-6)
        weight = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
        new_weight = (weight * scale[:, None, None, None]).astype(np.float32)
        conv.input[1] = _add_init(graph, f"{conv.input[1]}_equalized", new_weight)
        if len(conv.input) > 2 and conv.input[2]:
            conv.input[2] = _add_init(graph, f"{conv.output[0]}_bias_dropped", np.zeros(weight.shape[0], np.float32))
    used = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return out, len(convs)


def _add_init(graph: onnx.GraphProto, base: str, value: np.ndarray) -> str:
    taken = {t.name for t in graph.initializer}
    name, n = base, 0
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    graph.initializer.append(numpy_helper.from_array(value, name))
    return name


def select_convs(model: onnx.ModelProto, layers: str) -> list[str]:
    """Names of the convs to quantise for ``layers`` (see ``LAYERS``), by their shapes."""
    if layers not in LAYERS:
        raise UserError(f"int8 layers must be one of {list(LAYERS)}; got {layers!r}")
    inits = {t.name: t for t in model.graph.initializer}
    shapes = {}
    for node in model.graph.node:
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in inits:
            shapes[node.name] = tuple(inits[node.input[1]].dims)
    if not shapes:
        return []
    if layers == "all":
        return [name for name, (_, cin, _, _) in shapes.items() if cin >= 8]
    widest = max(cin for _, cin, _, _ in shapes.values())
    return [name for name, (cout, cin, kh, kw) in shapes.items() if cout == cin == widest and (kh, kw) == (3, 3)]


class _Reader:
    """onnxruntime's ``CalibrationDataReader`` protocol over a list of feeds."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]) -> None:
        self._feeds: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Mean |a - b| of two [0, 1] outputs on the 0-255 scale, both rounded to 8-bit pixels first."""
    def pixels(x: np.ndarray) -> np.ndarray:
        return (np.clip(np.nan_to_num(x, nan=0.0), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).astype(np.float32)

    return float(np.abs(pixels(a) - pixels(b)).mean())


def quantize_model(
    source: str | Path,
    output: str | Path | None = None,
    *,
    calibration_dir: str | Path,
    count: int = DEFAULT_COUNT,
    side: int = DEFAULT_SIDE,
    layers: str = DEFAULT_LAYERS,
) -> Path:
    """Write the int8 variant of the fp32 export ``source`` (default path: ``NAME.int8.onnx`` beside it).

    Calibrates on the first ``count`` photos of ``calibration_dir`` (short side ``side``, centre
    crop) and compares with fp32 on up to ``CHECK_COUNT`` more. Returns the path written.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source = Path(source)
    model = load_model(source)  # first: a .ckpt given here is named as one, not misread as NAME.int8.ckpt
    output = Path(output) if output is not None else variant_path(source, "int8")
    if output.suffix.lower() != ".onnx":
        raise UserError(f"quantize output must end in .onnx; got {output}")
    if output.exists() and output.samefile(source):
        raise UserError(f"quantize output {output} is the source model {source}; give another --output "
                        f"(default: {variant_path(source, 'int8')})")
    check_writable(output)
    if count < 1 or side < 16:
        raise UserError(f"calibration needs count >= 1 and side >= 16; got count {count}, side {side}")
    if layers not in LAYERS:
        raise UserError(f"int8 layers must be one of {list(LAYERS)}; got {layers!r}")
    metadata = read_metadata(model).to_dict()
    if "variant" in metadata:
        raise UserError(f"{source} is already a {metadata['variant'].get('name')} variant; quantize the fp32 export")
    conditional = WEIGHTS in {i.name for i in model.graph.input}
    photos = calibration_photos(calibration_dir, count)
    feeds = calibration_feeds(photos[:count], side, len(metadata["style_names"]), conditional)
    held_out = calibration_feeds(photos[count:], side, len(metadata["style_names"]), conditional)
    checked_on = "held-out photos" if held_out else "calibration photos (no others in the folder)"
    held_out = held_out or feeds[:CHECK_COUNT]
    log.info("calibrating %s on %d photos from %s at %d px", source.name, len(feeds), calibration_dir, side)

    equalized, n_equalized = equalize_channels(model, feeds)
    rewritten, report = rewrite_for_cpu(equalized)
    with tempfile.TemporaryDirectory(prefix="styletrain-quantize-") as tmp:
        plain, prepared, quantized = (Path(tmp) / name for name in ("plain.onnx", "prepared.onnx", "int8.onnx"))
        onnx.save_model(rewritten, plain)
        quant_pre_process(str(plain), str(prepared), skip_symbolic_shape=True)
        chosen = select_convs(onnx.load(prepared), layers)
        if not chosen:
            raise UserError(f"{source} has no convs to quantise for layers {layers!r}")
        quantize_static(str(prepared), str(quantized), _Reader(feeds), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["Conv"], nodes_to_quantize=chosen, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, extra_options={"WeightSymmetric": True})
        result = onnx.load(quantized)

    reference, candidate = _session(model), _session(result)
    diffs = [mean_abs_diff(reference.run([OUTPUT], feed)[0], candidate.run([OUTPUT], feed)[0]) for feed in held_out]
    variant = {
        "name": "int8",
        "source": source.name,
        "source_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        "layers": layers,
        "quantized_convs": len(chosen),
        "equalized_convs": n_equalized,
        "rewrites": dict(report.counts),
        "calibration": {"dir": str(calibration_dir), "photos": len(feeds), "side": side, "method": "minmax",
                        "weights": "int8 symmetric per channel", "activations": "uint8 per tensor"},
        "check": {"photos": len(held_out), "of": checked_on, "side": side, "mean_abs_diff_255": float(np.mean(diffs))},
    }
    set_metadata(result, {**metadata, "variant": variant})
    onnx.checker.check_model(result)
    write_model(result, output)
    log.info("wrote %s: %d int8 convs, mean |diff| vs fp32 %.2f / 255 on %d %s",
             output, len(chosen), variant["check"]["mean_abs_diff_255"], len(held_out), checked_on)
    return output
