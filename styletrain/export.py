"""ONNX export of trained nets: ``export_onnx``, ``export_net``, ``check_parity``.

The file format (inputs, output, metadata) is described in ``styletrain.runtime.onnx_backend``,
which runs the exported models; the parity check here runs them through it.

The exporter is torch's dynamo-based ``torch.onnx.export(..., dynamo=True)``: its graph is clean
(Conv, InstanceNormalization, Pad, Resize, MatMul, no constant-folding leftovers) and keeps the
reflect-pad-to-a-multiple-of-4 symbolic, so any size works.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from styletrain.errors import UserError
from styletrain.files import check_writable, write_atomically
from styletrain.metadata import MIN_SIDE, ModelMetadata
from styletrain.runtime.onnx_backend import CPU, IMAGE, METADATA_KEY, OUTPUT, WEIGHTS, OnnxStylizer
from styletrain.runtime.onnx_weights import pack_float16
from styletrain.runtime.parity import FLOAT32_TOLERANCE

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18
MIN_OPSET = 18
"""Lowest opset the exporter writes: torch's dynamo exporter builds opset-18 graphs and converts them to
newer opsets up to onnx's newest (``max_opset``); asked for one outside that range, it silently keeps 18."""
DEFAULT_TOLERANCE = FLOAT32_TOLERANCE
"""Largest allowed |onnxruntime - torch| on the [0, 1] output in the post-export parity check."""
PARITY_SIZES = ((1, 37, 53), (2, 16, 29), (1, 64, 48))
"""(batch, height, width) of the random parity inputs: odd sides, the minimum side, a batch of 2."""


class ExportError(RuntimeError):
    """The exported graph is invalid or does not match the torch net."""


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
    check_writable(output)
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
    check_opset(opset)
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
    written = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if written != opset:  # not seen within check_opset's range; recorded as written all the same
        log.warning("asked for opset %d, the exporter wrote opset %d", opset, written)
    export_info: dict[str, Any] = {"opset": written, "exporter": "torch.onnx dynamo",
                                   "torch": torch.__version__, "onnx": onnx.__version__}
    packed = pack_float16(model)  # lossless: only weights that are float16 values (float16 slim checkpoints)
    if packed:
        export_info["float16_weights"] = packed
    set_metadata(model, dataclasses.replace(metadata, export=export_info).to_dict())
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"onnx.checker rejected the exported graph: {exc}") from exc

    if check:
        with tempfile.TemporaryDirectory(prefix="styletrain-export-") as tmp:
            candidate = Path(tmp) / "model.onnx"
            candidate.write_bytes(model.SerializeToString())
            diff = check_parity(net, candidate, tolerance=tolerance)
        export_info.update(parity_max_abs_diff=diff, parity_tolerance=tolerance)
        set_metadata(model, dataclasses.replace(metadata, export=export_info).to_dict())
    write_model(model, output)
    log.info("wrote %s (%.1f MB)", output, output.stat().st_size / 1e6)
    return output


def write_model(model: onnx.ModelProto, output: Path) -> None:
    """Write ``output`` whole (``styletrain.files.write_atomically``): a server loading the folder
    never sees half a file."""
    data = model.SerializeToString()
    try:
        write_atomically(output, lambda part: part.write_bytes(data))
    except OSError as exc:
        raise UserError(f"could not write {output}: {exc.strerror or exc}; choose another path") from None


def max_opset() -> int:
    """Newest opset the exporter can convert to: the newest this onnx knows."""
    return onnx.defs.onnx_opset_version()


def check_opset(opset: int) -> int:
    """``opset`` if the exporter writes it (``MIN_OPSET`` to ``max_opset()``), else ``UserError``: asked
    for another, it writes some other opset than the one asked for."""
    if not MIN_OPSET <= opset <= max_opset():
        raise UserError(f"opset must be between {MIN_OPSET} and {max_opset()} (what torch's exporter and this "
                        f"onnx write); got {opset}")
    return opset


def check_parity(net: Any, model_path: str | Path, *, tolerance: float = DEFAULT_TOLERANCE,
                 sizes: Iterable[tuple[int, int, int]] = PARITY_SIZES, seed: int = 0) -> float:
    """Compare onnxruntime with the torch ``net`` on random images, for every style and a blend.

    Each size runs one batch holding every one-hot style row and a random blend, through the graph
    as written and through its CPU rewrite (``styletrain.runtime.cpu_graph``, what the CPU
    provider runs). Returns the largest absolute difference; raises ``ExportError`` above ``tolerance``.
    """
    from styletrain.runtime.torch_backend import TorchStylizer

    stylizers = [OnnxStylizer(model_path, providers=[CPU], cpu_rewrite=rewrite) for rewrite in (False, True)]
    reference = TorchStylizer(net, stylizers[0].metadata, precision="float32")
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
        expected = reference.run(x, w)
        for stylizer, graph in zip(stylizers, ("graph", "CPU-rewritten graph")):
            got = stylizer.run(x, w)
            if got.shape != expected.shape:
                raise ExportError(f"onnx output shape {got.shape} != torch {expected.shape} at {height}x{width}")
            diff = float(np.abs(got - expected).max())
            worst = max(worst, diff)
            if not diff <= tolerance:
                raise ExportError(f"onnxruntime ({graph}) differs from torch by {diff:.3g} (> tolerance "
                                  f"{tolerance:g}) at batch {batch}, {height}x{width}; the export is wrong")
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


def set_metadata(model: onnx.ModelProto, metadata: dict[str, Any]) -> None:
    """Store the metadata as JSON under ``metadata_props["styletrain"]``, replacing any old entry
    and the quantiser's ``onnx.*`` bookkeeping entries (used by export and ``styletrain quantize``)."""
    props = [p for p in model.metadata_props if p.key != METADATA_KEY and not p.key.startswith("onnx.")]
    del model.metadata_props[:]
    model.metadata_props.extend(props)
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in props},
                                        METADATA_KEY: json.dumps(metadata, default=str, sort_keys=True)})
    model.producer_name = "styletrain"
    model.doc_string = f"styletrain style-transfer net; styles: {', '.join(metadata['style_names'])}"

