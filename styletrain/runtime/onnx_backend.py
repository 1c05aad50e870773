"""Running exported ``.onnx`` models with onnxruntime: ``OnnxStylizer``, ``load_model``, ``read_metadata``.

An exported model is one self-contained ``.onnx`` file (no external-data sidecar):

- input ``image``: float32 RGB in [0, 1], NCHW, dynamic batch, height and width (sides >= 16);
- input ``style_weights``: float32 (B, N), only for multi-style (conditional) nets; rows are
  validated and normalised in Python (``styletrain.styles.style_weights``), never in the graph;
- output ``output``: float32 RGB in [0, 1], same shape as ``image``;
- metadata: ``metadata_props["styletrain"]`` is the checkpoint's metadata as JSON (style names,
  net config, loss and training settings) plus an ``export`` entry (opset, exporter, parity);
- weights: float32, or float16 + Cast where that is lossless (``styletrain.runtime.onnx_weights``).

Importable without torch: the server runs on this module alone. onnxruntime's own ``RunOptions``
(terminate flag, arena shrinkage) stay in here. Images above ``Staging.min_pixels`` run in stages
(``styletrain.runtime.staged``) from sessions built on first use out of the loaded model.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx.external_data_helper import uses_external_data

from styletrain.errors import UserError
from styletrain.files import file_kind
from styletrain.metadata import ModelMetadata
from styletrain.runtime.base import HOST_COPY_BYTES_PER_PIXEL, RunCancelled, RunOptions, Stylizer, batch_weights
from styletrain.runtime.staged import (
    DEFAULT_STAGING,
    StagePlan,
    Staging,
    Unsupported,
    plan_stages,
    run_bytes,
    run_stages,
)
from styletrain.runtime.onnx_weights import unpack_float16
from styletrain.runtime.ort_env import session_options, shared_cpu_arena

log = logging.getLogger(__name__)

IMAGE, WEIGHTS, OUTPUT = "image", "style_weights", "output"
METADATA_KEY = "styletrain"
CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"


def load_model(path: str | Path) -> onnx.ModelProto:
    """Read an exported model, refusing files that reference external data or lack our metadata;
    weights stored as float16 come back as the float32 graph (``runtime.onnx_weights``)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"ONNX model not found: {path}")
    kind = file_kind(path)
    if kind == "a PyTorch checkpoint":
        raise UserError(f"{path} is a PyTorch checkpoint, not an ONNX model: export it first with "
                        f"`styletrain export --checkpoint {path} --output NAME.onnx`")
    if kind.endswith(" image"):
        raise UserError(f"{path} is {kind}, not an ONNX model: pass an .onnx file that `styletrain export` wrote")
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
    return unpack_float16(model)


def read_metadata(model: onnx.ModelProto) -> ModelMetadata:
    """The styletrain metadata stored in an exported model."""
    props = {p.key: p.value for p in model.metadata_props}
    return ModelMetadata.from_dict(json.loads(props[METADATA_KEY]))


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


def default_providers(device: str | None = None) -> list[str]:
    """Execution providers for ``device``: None is CUDA first when this build has it, CPU always."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cpu":
        return [CPU]
    if device == "cuda" and CUDA not in available:
        raise UserError(f"device 'cuda' needs onnxruntime-gpu; this onnxruntime has {available}")
    return [p for p in (CUDA, CPU) if p in available]


class OnnxStylizer(Stylizer):
    """An exported model in one onnxruntime ``InferenceSession``, plus staged sessions for large images.

    ``threads`` sets onnxruntime's intra-op threads of each session's pool (None: one per physical
    core); ignored once the process shares one pool (``ort_env.share_thread_pool``). On the CPU
    provider alone, ``cpu_rewrite`` applies the exact rewrites of ``styletrain.runtime.cpu_graph``
    (same outputs within ~1e-6, about a quarter less time). The memory
    arena grows for every new image size unless told to shrink: with ``shrink_arena`` every run
    gives back what it grew, so memory stays bounded over many sizes (measured in
    ``benchmarks/bench_serving.py --memory``). ``run`` is thread-safe (sessions allow concurrent runs).
    ``staging`` (None: never) says which images ``run_pixels`` runs in stages, with memory that
    grows by about 70 bytes per pixel (68 measured at 4000x4000) instead of several hundred.
    """

    backend = "onnxruntime"

    def __init__(self, path: str | Path, providers: Sequence[str] | None = None, threads: int | None = None,
                 *, memory_arena: bool = True, shrink_arena: bool = True, cpu_rewrite: bool = True,
                 staging: Staging | None = DEFAULT_STAGING) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        model = load_model(self.path)
        self.metadata = read_metadata(model)
        self.variant = self.metadata.extra.get("variant", {}).get("name", "fp32")
        providers = list(providers or default_providers())
        self._rewritten = False
        if cpu_rewrite and providers == [CPU]:
            from styletrain.runtime.cpu_graph import rewrite_for_cpu

            model, report = rewrite_for_cpu(model)
            self._rewritten = bool(report)
        self.style_names = list(self.metadata.style_names)
        self.conditional = WEIGHTS in {i.name for i in model.graph.input}
        options = session_options(threads)
        options.enable_cpu_mem_arena = memory_arena
        # Built from the bytes we checked: nothing else (no external file) can be pulled in.
        self.session = ort.InferenceSession(model.SerializeToString(), sess_options=options,
                                            providers=providers)
        self.providers = self.session.get_providers()
        self.device = "cuda" if CUDA in self.providers else "cpu"
        self._shrink = ";".join(device for provider, device in ((CPU, "cpu:0"), (CUDA, "gpu:0"))
                                if memory_arena and shrink_arena and provider in self.providers)
        self.staging = staging
        self._model: onnx.ModelProto | None = model if staging is not None else None  # planned on first use
        self._threads = threads
        self._stage_plan: StagePlan | None = None
        self._stage_sessions: list[Any] | None = None
        self._lock = threading.Lock()
        log.debug("loaded %s (%s) on %s", self.path.name, ", ".join(self.style_names), self.providers)

    def run(self, batch: np.ndarray, style_weights: np.ndarray, *,
            options: RunOptions | None = None) -> np.ndarray:
        images = np.ascontiguousarray(batch, dtype=np.float32)
        weights = batch_weights(style_weights, images.shape[0], len(self.style_names))
        feeds = {IMAGE: images, **({WEIGHTS: weights} if self.conditional else {})}
        return self._run_session(self.session, [OUTPUT], feeds, options or RunOptions(), self._run_options())[0]

    def run_pixels(self, pixels: np.ndarray, style_weights: np.ndarray, *,
                   options: RunOptions | None = None) -> np.ndarray:
        """uint8 (H, W, 3) -> uint8 (H, W, 3): whole-image up to ``staging.min_pixels``, in stages above."""
        staged = self._stages(*pixels.shape[:2])
        if staged is None:
            return super().run_pixels(pixels, style_weights, options=options)
        plan, sessions = staged
        weights = batch_weights(style_weights, 1, len(self.style_names))
        feeds = {WEIGHTS: weights} if self.conditional else {}
        options = options or RunOptions()
        shrink = "cpu:0" if shared_cpu_arena() and CPU in self.providers else ""
        return run_stages(plan, sessions, lambda session, outputs, inputs, last: self._run_session(
            session, outputs, inputs, options, self._run_options(devices=shrink if last else "")), pixels, feeds)

    def runs_staged(self, height: int, width: int) -> bool:
        return self.staging is not None and self.staging.applies(height, width) and self._plan() is not None

    def memory_bytes(self, height: int, width: int) -> int:
        """Estimated peak host memory of ``run_pixels``: ``staged.run_bytes`` for an image run in stages
        (their maps are kept in host memory) or on the CPU (whole-image for unsupported graphs); on CUDA
        otherwise only the copies in and out, the maps being in GPU memory."""
        if self.device == "cuda" and not self.runs_staged(height, width):
            return height * width * HOST_COPY_BYTES_PER_PIXEL
        plan = self._plan()
        if plan is None:
            return super().memory_bytes(height, width)
        estimate = run_bytes(plan, self.staging, height, width)
        if self._rewritten and not (self.staging and self.staging.applies(height, width)):
            # the plan sizes the rewritten graph (430 B/px for the width-16 nets, 429 measured at
            # 1 Mpx, benchmarks/bench_large_images.py): keep the generic bound's headroom
            estimate = max(estimate, super().memory_bytes(height, width))
        return estimate

    def warm_up(self, side: int = 64) -> None:
        """Run once, and build the staged sessions now rather than on the first large image."""
        super().warm_up(side)
        if self.staging is not None:
            self._stages(self.staging.min_pixels + 1, 1)

    def _stages(self, height: int, width: int) -> tuple[StagePlan, list[Any]] | None:
        """The stage plan and its sessions if an image of this size runs in stages (built once), else None."""
        if self.staging is None or not self.staging.applies(height, width):
            return None
        plan = self._plan()
        if plan is None:
            return None
        with self._lock:
            if self._stage_sessions is None:
                import onnxruntime as ort

                # 22-odd sessions take turns: a finished one's own pool must not spin while the next runs.
                options = session_options(self._threads, idle_spin=False)
                # One arena for all stage sessions (each would keep its own), else none at all.
                if shared_cpu_arena():
                    options.add_session_config_entry("session.use_env_allocators", "1")
                else:
                    options.enable_cpu_mem_arena = False
                self._stage_sessions = [ort.InferenceSession(stage.model, sess_options=options,
                                                             providers=self.providers) for stage in plan.stages]
            return plan, self._stage_sessions

    def _plan(self) -> StagePlan | None:
        """The stage plan (made once), or None without staging or for a graph the planner does not support."""
        with self._lock:
            if self._stage_plan is None and self._model is not None:
                try:
                    self._stage_plan = plan_stages(self._model, tile_bytes=self.staging.tile_bytes)
                except Unsupported as exc:
                    log.warning("%s runs whole-image only, at any size: %s", self.path.name, exc)
                self._model = None  # the plan holds what it needs
            return self._stage_plan

    def _run_session(self, session: Any, outputs: list[str], feeds: dict[str, np.ndarray], options: RunOptions,
                     run_options: Any) -> list[np.ndarray]:
        """One session run that ``options.cancel()`` interrupts (onnxruntime's terminate flag)."""
        with options.interrupts(lambda: setattr(run_options, "terminate", True)):
            try:
                return session.run(outputs, feeds, run_options)
            except Exception as exc:
                if options.cancelled:
                    raise RunCancelled(f"{self.path.name}: run stopped because the call ended") from exc
                raise

    def _run_options(self, *, devices: str | None = None) -> Any:
        """Fresh ``onnxruntime.RunOptions`` for one run that shrinks the arenas of ``devices`` (None:
        this session's, when enabled; "": none) at its end."""
        import onnxruntime as ort

        run_options = ort.RunOptions()
        devices = self._shrink if devices is None else devices
        if devices:
            run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", devices)
        return run_options
