"""ONNX export of trained nets, and running exported models with onnxruntime.

An exported model is one self-contained ``.onnx`` file (no external-data sidecar):

- input ``image``: float32 RGB in [0, 1], NCHW, dynamic batch, height and width (sides >= 16);
- input ``style_weights``: float32 (B, N), only for multi-style nets (N > 1); rows are
  validated and normalised in Python (``styletrain.styles.style_weights``), never in the graph;
- output ``output``: float32 RGB in [0, 1], same shape as ``image``;
- metadata: ``metadata_props["styletrain"]`` is the checkpoint's metadata as JSON (style names,
  net config, loss and training settings) plus an ``export`` entry (opset, exporter, parity).

The exporter is torch's dynamo-based ``torch.onnx.export(..., dynamo=True)``: its graph is clean
(Conv, InstanceNormalization, Pad, Resize, MatMul, no constant-folding leftovers) and keeps the
reflect-pad-to-a-multiple-of-4 symbolic, so any size works. ``OnnxStylizer`` is the one place that
runs such a model: the ``stylize`` command and the gRPC server both use it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx.external_data_helper import uses_external_data
from PIL import Image

from styletrain.errors import UserError
from styletrain.metadata import MIN_SIDE, ModelMetadata

log = logging.getLogger(__name__)

IMAGE, WEIGHTS, OUTPUT = "image", "style_weights", "output"
METADATA_KEY = "styletrain"
DEFAULT_OPSET = 18
DEFAULT_TOLERANCE = 1e-4
"""Largest allowed |onnxruntime - torch| on the [0, 1] output in the post-export parity check."""
PARITY_SIZES = ((1, 37, 53), (2, 16, 29), (1, 64, 48))
"""(batch, height, width) of the random parity inputs: odd sides, the minimum side, a batch of 2."""


class ExportError(RuntimeError):
    """The exported graph is invalid or does not match the torch net."""


# ---------------------------------------------------------------------------------------------
# export


def export_onnx(
    checkpoint: str | Path,
    output: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    check: bool = True,
    tolerance: float = DEFAULT_TOLERANCE,
) -> Path:
    """Export a styletrain checkpoint to one ``.onnx`` file; with ``check``, verify it against torch.

    Raises ``ExportError`` if ``onnx.checker`` rejects the graph or the parity check exceeds
    ``tolerance`` (max absolute difference on the [0, 1] output); nothing is written then.
    """
    from styletrain.checkpoint import load_transformer

    output = Path(output)
    if output.suffix.lower() != ".onnx":
        raise UserError(f"export output must end in .onnx; got {output}")
    net, metadata = load_transformer(checkpoint)
    return export_net(net, metadata, output, opset=opset, check=check, tolerance=tolerance)


def export_net(
    net: Any,
    metadata: ModelMetadata,
    output: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    check: bool = True,
    tolerance: float = DEFAULT_TOLERANCE,
) -> Path:
    """Export a ``TransformerNet`` with its checkpoint ``metadata``; the stored JSON is
    ``metadata.to_dict()`` with the net's config and an ``export`` entry."""
    import torch

    output = Path(output)
    if metadata.num_styles != net.num_styles:
        raise ValueError(f"{metadata.num_styles} style names for a net with {net.num_styles} styles")
    metadata = dataclasses.replace(metadata, net=net.config())
    net = net.eval().float().cpu()
    batch, height, width = (torch.export.Dim(name, min=lo) for name, lo in
                            (("batch", 1), ("height", MIN_SIDE), ("width", MIN_SIDE)))
    image_dims = {0: batch, 2: height, 3: width}
    example = torch.rand(1, 3, 64, 64)
    if net.num_styles > 1:
        args: tuple = (example, torch.full((1, net.num_styles), 1.0 / net.num_styles))
        names, dynamic = [IMAGE, WEIGHTS], {IMAGE: image_dims, WEIGHTS: {0: batch}}
    else:
        args, names, dynamic = (example,), [IMAGE], {IMAGE: image_dims}
    log.info("exporting %d-style net (opset %d) to %s", net.num_styles, opset, output)
    with warnings.catch_warnings(), _quiet("onnxscript", "onnx_ir"), torch.inference_mode(False):
        # Both inputs share the batch dim on purpose; the exporter warns that it keeps one name.
        warnings.filterwarnings("ignore", message=".*axis name.*will not be used")
        program = torch.onnx.export(net, args, None, input_names=names, output_names=[OUTPUT],
                                    opset_version=opset, dynamo=True, dynamic_shapes=dynamic,
                                    external_data=False, optimize=True, verbose=False)
    model = program.model_proto
    export_info: dict[str, Any] = {"opset": opset, "exporter": "torch.onnx dynamo",
                                   "torch": torch.__version__, "onnx": onnx.__version__}
    _set_metadata(model, dataclasses.replace(metadata, export=export_info).to_dict())
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"onnx.checker rejected the exported graph: {exc}") from exc

    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(suffix=".onnx", dir=output.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if check:
            tmp.write_bytes(model.SerializeToString())
            diff = check_parity(net, tmp, tolerance=tolerance)
            export_info.update(parity_max_abs_diff=diff, parity_tolerance=tolerance)
            _set_metadata(model, dataclasses.replace(metadata, export=export_info).to_dict())
        tmp.write_bytes(model.SerializeToString())
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o666 & ~umask)  # mkstemp makes the file private; give it a normal file's mode
        tmp.replace(output)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("wrote %s (%.1f MB)", output, output.stat().st_size / 1e6)
    return output


def check_parity(net: Any, model_path: str | Path, *, tolerance: float = DEFAULT_TOLERANCE,
                 sizes: Iterable[tuple[int, int, int]] = PARITY_SIZES, seed: int = 0) -> float:
    """Compare onnxruntime with the torch ``net`` on random images, for every style and a blend.

    Each size runs one batch holding every one-hot style row and a random blend. Returns the
    largest absolute difference; raises ``ExportError`` above ``tolerance``.
    """
    import torch

    stylizer = OnnxStylizer(model_path, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    n = net.num_styles
    rows = np.eye(n, dtype=np.float32)
    if n > 1:
        blend = rng.random(n).astype(np.float32)
        rows = np.concatenate([rows, (blend / blend.sum())[None]])
    worst = 0.0
    for batch, height, width in sizes:
        # every row of ``rows`` applied to ``batch`` random images
        images = rng.random((batch, 3, height, width), dtype=np.float32)
        x = np.repeat(images, len(rows), axis=0)
        w = np.tile(rows, (batch, 1))
        with torch.inference_mode():
            expected = net(torch.from_numpy(x), torch.from_numpy(w)).numpy()
        got = stylizer.run(x, w)
        if got.shape != expected.shape:
            raise ExportError(f"onnx output shape {got.shape} != torch {expected.shape} at {height}x{width}")
        diff = float(np.abs(got - expected).max())
        worst = max(worst, diff)
        if not diff <= tolerance:
            raise ExportError(f"onnxruntime differs from torch by {diff:.3g} (> tolerance {tolerance:g}) "
                              f"at batch {batch}, {height}x{width}; the export is wrong")
    log.info("parity vs torch: max |diff| %.3g over %d styles%s", worst, n, " and a blend" if n > 1 else "")
    return worst


@contextlib.contextmanager
def _quiet(*loggers: str) -> Iterator[None]:
    """Silence the exporter's per-pass INFO logs (they drown ours), restoring the levels after."""
    saved = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def _set_metadata(model: onnx.ModelProto, metadata: dict[str, Any]) -> None:
    """Store the metadata as JSON under ``metadata_props["styletrain"]`` (replacing any old entry)."""
    props = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(props)
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in props},
                                        METADATA_KEY: json.dumps(metadata, default=str, sort_keys=True)})
    model.producer_name = "styletrain"
    model.doc_string = f"styletrain style-transfer net; styles: {', '.join(metadata['style_names'])}"


# ---------------------------------------------------------------------------------------------
# loading and running


def load_model(path: str | Path) -> onnx.ModelProto:
    """Read an exported model, refusing files that reference external data or lack our metadata."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"ONNX model not found: {path}")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:
        raise UserError(f"could not read ONNX model {path}: {exc.__class__.__name__}: {exc}") from None
    if any(uses_external_data(t) for t in _tensors(model.graph)):
        raise UserError(f"{path} references external data files; styletrain only loads self-contained "
                        "models (re-export it with `styletrain export`)")
    props = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in props:
        raise UserError(f"{path} is not a styletrain export (no {METADATA_KEY!r} metadata); "
                        "export it with `styletrain export`")
    inputs = [i.name for i in model.graph.input]
    if IMAGE not in inputs or [o.name for o in model.graph.output] != [OUTPUT]:
        raise UserError(f"{path} has inputs {inputs}; expected {IMAGE!r} (and {WEIGHTS!r}) -> {OUTPUT!r}")
    return model


def read_metadata(model: onnx.ModelProto) -> dict[str, Any]:
    """The styletrain metadata stored in an exported model."""
    props = {p.key: p.value for p in model.metadata_props}
    return json.loads(props[METADATA_KEY])


def _tensors(graph: onnx.GraphProto) -> Iterable[onnx.TensorProto]:
    """Every tensor stored in a graph: initializers and attribute tensors, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _tensors(attr.g)
            for sub in attr.graphs:
                yield from _tensors(sub)


def default_providers() -> list[str]:
    """CUDA first when this onnxruntime build has it, CPU always."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


class OnnxStylizer:
    """An exported model in one onnxruntime ``InferenceSession``; implements ``Stylizer``.

    ``threads`` sets onnxruntime's intra-op threads (None: one per physical core). The memory
    arena grows for every new image size unless told to shrink: ``run_options()`` asks it to give
    back what a run grew, so memory stays bounded over many sizes (measured in
    ``benchmarks/bench_serving.py --memory``). ``run`` is thread-safe (sessions allow concurrent runs).
    """

    min_side = MIN_SIDE

    def __init__(self, path: str | Path, providers: Sequence[str] | None = None, threads: int | None = None,
                 *, memory_arena: bool = True) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        model = load_model(self.path)
        self.metadata = read_metadata(model)
        self.style_names: list[str] = list(self.metadata["style_names"])
        self.conditional = WEIGHTS in {i.name for i in model.graph.input}
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.enable_cpu_mem_arena = memory_arena
        if threads is not None:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Built from the bytes we checked: nothing else (no external file) can be pulled in.
        self.session = ort.InferenceSession(model.SerializeToString(), sess_options=options,
                                            providers=list(providers or default_providers()))
        self.providers: list[str] = self.session.get_providers()
        self._shrink = ";".join(device for provider, device in (("CPUExecutionProvider", "cpu:0"),
                                                                ("CUDAExecutionProvider", "gpu:0"))
                                if memory_arena and provider in self.providers)
        log.debug("loaded %s (%s) on %s", self.path.name, ", ".join(self.style_names), self.providers)

    def run_options(self) -> Any:
        """Fresh ``onnxruntime.RunOptions`` for one run: arena shrinkage on; set ``.terminate`` to stop it."""
        import onnxruntime as ort

        options = ort.RunOptions()
        if self._shrink:
            options.add_run_config_entry("memory.enable_memory_arena_shrinkage", self._shrink)
        return options

    def run(self, images: np.ndarray, weights: np.ndarray | None = None, *, run_options: Any = None) -> np.ndarray:
        """(B, 3, H, W) float32 in [0, 1] -> same shape; ``weights`` (N,) or (B, N), already normalised.

        ``run_options`` defaults to ``self.run_options()``.
        """
        feeds = {IMAGE: np.ascontiguousarray(images, dtype=np.float32)}
        if self.conditional:
            if weights is None:
                raise ValueError(f"{self.path.name} holds {len(self.style_names)} styles: pass weights")
            w = np.asarray(weights, dtype=np.float32).reshape(-1, len(self.style_names))
            feeds[WEIGHTS] = np.ascontiguousarray(np.broadcast_to(w, (images.shape[0], w.shape[1])))
        return self.session.run([OUTPUT], feeds, run_options or self.run_options())[0]

    def __call__(self, image: Image.Image, weights: np.ndarray, *, run_options: Any = None) -> Image.Image:
        return array_to_image(self.run(image_to_array(image), weights, run_options=run_options))

    def warm_up(self, side: int = 64) -> None:
        """Run once so the first real request does not pay for kernel selection and allocation."""
        weights = np.full(len(self.style_names), 1.0 / len(self.style_names), dtype=np.float32)
        self.run(np.full((1, 3, side, side), 0.5, dtype=np.float32), weights)


def image_to_array(image: Image.Image) -> np.ndarray:
    """PIL image -> float32 (1, 3, H, W) in [0, 1] (as ``styletrain.images.to_tensor``, without torch)."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return np.ascontiguousarray(array.transpose(2, 0, 1)[None])


def array_to_image(array: np.ndarray) -> Image.Image:
    """(1, 3, H, W) or (3, H, W) float in [0, 1] -> PIL RGB; values clamped, NaN -> 0."""
    if array.ndim == 4:
        array = array[0]
    array = np.clip(np.nan_to_num(array, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    return Image.fromarray((array.transpose(1, 2, 0) * 255.0 + 0.5).astype(np.uint8))
