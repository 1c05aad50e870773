"""Running a styletrain checkpoint's transformer in torch: ``TorchStylizer``, on the CPU or fast on CUDA.

On the CPU the net runs eagerly in float32 under ``inference_mode`` (it matches the onnxruntime
export within ``parity.FLOAT32_TOLERANCE``; bfloat16 on request, ``default_precision`` says why
not by default). On CUDA this is the serving path for machines that have a GPU and torch but not
``onnxruntime-gpu``:

- reduced precision by autocast (``precision``: float16 by default; bfloat16 exceeds the 2/255
  tolerance on the shipped nets, see ``styletrain.runtime.parity``), weights and activations in
  channels_last, ``inference_mode``;
- CUDA graphs per shape bucket: the batch is padded up to a power of two (at most
  ``max_graph_batch``; larger batches run in chunks) and the height and width are kept exact. A
  bucket's graph is captured the second time its shape is seen (one-off sizes run eagerly, so they
  never pay for a capture) or up front with ``prepare``; at most ``max_graphs`` are kept, holding
  at most ``max_graph_pixels`` (batch x height x width, summed: each graph keeps pinned host buffers
  and a GPU memory pool in proportion), least recently used evicted; a larger shape runs eagerly.
  Padding H and W up to a multiple of 32 was measured and rejected: instance norm's statistics and
  every conv's border change with the padding (max 197/255 on a 500x300 photo with the shipped
  ``multistyle``), while padding the batch is exact, since every sample is normalised on its own;
- optionally ``compile=True``: the forward is ``torch.compile``d (one compilation per new shape,
  minutes at first use) and then captured in the same graphs.

Inputs and outputs stay float32 NCHW numpy arrays in [0, 1] (the ``Stylizer`` interface); on CUDA
they pass through pinned host buffers. ``run`` is thread-safe: on CUDA the runs of every
``TorchStylizer`` on a device take turns (a graph's buffers are shared, and no other thread may
touch the device while a graph is being captured).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from styletrain.checkpoint import load_transformer
from styletrain.errors import UserError
from styletrain.metadata import ModelMetadata
from styletrain.runtime.base import HOST_COPY_BYTES_PER_PIXEL, RunOptions, Stylizer, batch_weights
from styletrain.transformer import TransformerNet

log = logging.getLogger(__name__)

PRECISIONS = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DEFAULT_CUDA_PRECISION = "float16"
MAX_GRAPH_PIXELS = 32_000_000
"""Pixels (batch x height x width) of the CUDA graphs one model keeps: about four batches of 8 frames
at 1280x720. Each holds 24 bytes a pixel of pinned host memory and its own GPU memory pool."""
CPU_BYTES_PER_PIXEL_PER_WIDTH = 30
"""A float32 run on the CPU also holds the net's full-resolution maps: about 30 bytes a pixel per
channel of its width (measured at 1024 px, peak RSS over before: 975 B/px in all at width 32, 493 at 16)."""
_SEEN_LIMIT = 4096  # shapes remembered for capture-on-second-sighting before the memory is cleared

Forward = Callable[[Tensor, Tensor], Tensor]

_device_locks: dict[torch.device, threading.Lock] = {}
_device_locks_guard = threading.Lock()


def _device_lock(device: torch.device) -> threading.Lock:
    """One lock per CUDA device, shared by the stylizers on it."""
    with _device_locks_guard:
        return _device_locks.setdefault(device, threading.Lock())


def default_precision(device: torch.device) -> str:
    """float16 on CUDA, float32 on the CPU. bfloat16 is opt-in on CPUs with native bf16: on a 2-core
    AVX512-BF16 EPYC it ran 1.65x faster than float32 eager at 512 px, but it differs from the export
    by up to 5-18/255 on the shipped nets, which fails the 2/255 parity check (``docs/cpu.md``)."""
    return DEFAULT_CUDA_PRECISION if device.type == "cuda" else "float32"


def batch_bucket(batch: int, limit: int) -> int:
    """The batch a graph is captured for: ``batch`` rounded up to a power of two, at most ``limit``."""
    if batch < 1 or limit < 1:
        raise ValueError(f"batch and limit must be at least 1; got {batch} and {limit}")
    return min(1 << (batch - 1).bit_length(), limit)


class _Graph:
    """One forward captured as a CUDA graph for a fixed (batch, height, width), with its static buffers.

    The images and weights are copied into pinned host buffers, then to the graph's static inputs;
    rows beyond the real batch keep whatever they held (valid images and weights: samples never mix).
    """

    def __init__(self, forward: Forward, batch: int, num_styles: int, height: int, width: int,
                 device: torch.device) -> None:
        self.batch = batch
        self.images = torch.zeros((batch, 3, height, width), device=device)
        self.weights = torch.full((batch, num_styles), 1.0 / num_styles, device=device)
        self.host_images = torch.zeros(self.images.shape).pin_memory()
        self.host_weights = self.weights.cpu().pin_memory()
        # Warm up on a side stream first (cuDNN picks its algorithms, torch.compile compiles), as
        # torch.cuda.graph's documentation asks, then capture.
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(2):
                forward(self.images, self.weights)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.output = forward(self.images, self.weights)
        self.host_output = torch.empty(self.output.shape, dtype=self.output.dtype).pin_memory()

    def replay(self, images: Tensor, weights: Tensor) -> Tensor:
        """Run on tensors already on the device; the result is a view of the graph's output buffer."""
        n = len(images)
        self.images[:n].copy_(images)
        self.weights[:n].copy_(weights)
        self.graph.replay()
        return self.output[:n]

    def run(self, images: np.ndarray, weights: np.ndarray) -> np.ndarray:
        n = len(images)
        self.host_images[:n].copy_(torch.from_numpy(images))
        self.host_weights[:n].copy_(torch.from_numpy(weights))
        self.images.copy_(self.host_images, non_blocking=True)
        self.weights.copy_(self.host_weights, non_blocking=True)
        self.graph.replay()
        self.host_output.copy_(self.output, non_blocking=True)
        torch.cuda.current_stream(self.images.device).synchronize()
        return self.host_output[:n].numpy().copy()  # the pinned buffer is reused by the next run


class TorchStylizer(Stylizer):
    """A ``TransformerNet`` and its checkpoint metadata, run in eval mode under ``inference_mode``.

    ``precision`` ("float32", "float16", "bfloat16"; None: float16 on CUDA, float32 on the CPU),
    ``channels_last`` and ``cuda_graphs`` (None: on for CUDA, off for the CPU; graphs need CUDA)
    choose the fast path described in the module docstring; ``compile`` adds ``torch.compile``.
    """

    backend = "torch"

    def __init__(self, net: TransformerNet, metadata: ModelMetadata, *, device: str | torch.device = "cpu",
                 precision: str | None = None, channels_last: bool | None = None,
                 cuda_graphs: bool | None = None, compile: bool = False, max_graphs: int = 16,
                 max_graph_batch: int = 32, max_graph_pixels: int = MAX_GRAPH_PIXELS) -> None:
        self._device = torch.device(device)
        cuda = self._device.type == "cuda"
        if cuda and not torch.cuda.is_available():
            raise UserError("device 'cuda' was asked for but torch sees no CUDA device; use device 'cpu'")
        precision = precision or default_precision(self._device)
        if precision not in PRECISIONS:
            raise UserError(f"precision must be one of {list(PRECISIONS)}; got {precision!r}")
        if cuda_graphs and not cuda:
            raise UserError("CUDA graphs need device 'cuda'; leave cuda_graphs unset on the CPU")
        if max_graphs < 1 or max_graph_batch < 1:
            raise UserError("max_graphs and max_graph_batch must be at least 1; "
                            f"got {max_graphs} and {max_graph_batch}")
        self.precision = precision
        self.channels_last = (cuda or precision == "bfloat16") if channels_last is None else channels_last
        self.cuda_graphs = cuda if cuda_graphs is None else cuda_graphs
        self.compiled = compile
        self.max_graphs, self.max_graph_batch, self.max_graph_pixels = max_graphs, max_graph_batch, max_graph_pixels
        self.net = net.eval().to(self._device)
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.metadata = metadata
        self.style_names = list(metadata.style_names)
        self.device = self._device.type
        self.providers = [f"torch:{self.device}"]
        self._dtype = PRECISIONS[precision]
        self._forward: Forward = torch.compile(self._eager_forward) if compile else self._eager_forward
        self._graphs: OrderedDict[tuple[int, int, int], _Graph] = OrderedDict()
        self._seen: dict[tuple[int, int, int], int] = {}
        if cuda and self._device.index is None:
            self._device = torch.device("cuda", torch.cuda.current_device())
        self._lock = _device_lock(self._device) if cuda else threading.Lock()

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, *, device: str | torch.device = "cpu", **options: object
    ) -> TorchStylizer:
        """Load a ``.ckpt`` written by training or ``save_transformer``; ``options`` as in the constructor."""
        net, metadata = load_transformer(path)
        return cls(net, metadata, device=device, **options)  # type: ignore[arg-type]

    @property
    def graph_shapes(self) -> list[tuple[int, int, int]]:
        """The (batch, height, width) buckets with a captured graph, least recently used first."""
        return list(self._graphs)

    def run(self, batch: np.ndarray, style_weights: np.ndarray, *,
            options: RunOptions | None = None) -> np.ndarray:
        options = options or RunOptions()
        options.check()  # a torch forward cannot be interrupted: only refuse to start
        images = np.ascontiguousarray(batch, dtype=np.float32)
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"batch must be float32 (B, 3, H, W); got shape {images.shape}")
        weights = batch_weights(style_weights, len(images), len(self.style_names))
        if self._device.type != "cuda" and not self.cuda_graphs:
            return self._run_eager(images, weights)
        with self._lock, torch.inference_mode():
            options.check()  # it may have waited for the lock
            if not self.cuda_graphs:
                return self._run_eager(images, weights)
            chunks = [self._run_graphed(images[i:i + self.max_graph_batch], weights[i:i + self.max_graph_batch])
                      for i in range(0, len(images), self.max_graph_batch)]
        return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)

    def memory_bytes(self, height: int, width: int) -> int:
        """Estimated peak host memory of ``run_pixels``: on CUDA only the copies in and out, on the CPU
        the whole run, which grows with the net's width (there is no staged mode: large images cost
        ~1 KB a pixel at width 32)."""
        maps = 0 if self.device == "cuda" else CPU_BYTES_PER_PIXEL_PER_WIDTH * self.net.width
        return height * width * (HOST_COPY_BYTES_PER_PIXEL + maps)

    def run_tensors(self, images: Tensor, weights: Tensor) -> Tensor:
        """``run`` for float32 (B, 3, H, W) and (B, N) tensors already on this stylizer's device, without
        host copies (for callers whose frames live on the GPU, and to time the model alone)."""
        if self._device.type != "cuda" and not self.cuda_graphs:
            with torch.inference_mode():
                return self._forward(images, weights)
        outputs = []
        with self._lock, torch.inference_mode():
            if not self.cuda_graphs:
                return self._forward(images, weights)
            for i in range(0, len(images), self.max_graph_batch):
                x, w = images[i:i + self.max_graph_batch], weights[i:i + self.max_graph_batch]
                graph = self._graph_for(len(x), x.shape[2], x.shape[3])
                outputs.append(self._forward(x, w) if graph is None else graph.replay(x, w).clone())
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

    def prepare(self, shapes: Iterable[tuple[int, int, int]]) -> None:
        """Capture the graphs for these (batch, height, width) shapes now (the server's configured buckets)."""
        if not self.cuda_graphs:
            return
        with self._lock, torch.inference_mode():
            keys = [(batch_bucket(batch, self.max_graph_batch), height, width) for batch, height, width in shapes]
            for key in keys:
                if key not in self._graphs:
                    self._capture(key)
            left_out = [key for key in keys if key not in self._graphs]
        if left_out:
            log.warning("the CUDA graphs for %s (batch, height, width) were not kept: together they exceed "
                        "max_graph_pixels (%d) or max_graphs (%d), or the GPU memory", left_out,
                        self.max_graph_pixels, self.max_graphs)

    def _eager_forward(self, images: Tensor, weights: Tensor) -> Tensor:
        x = images.contiguous(memory_format=torch.channels_last) if self.channels_last else images
        # cache_enabled=False: autocast's weight-cast cache must not live across graph captures
        with torch.autocast(self._device.type, dtype=self._dtype, enabled=self._dtype != torch.float32,
                            cache_enabled=False):
            out = self.net(x, weights)
        return out.float().contiguous()

    def _run_eager(self, images: np.ndarray, weights: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(images).to(self._device)
            w = torch.from_numpy(weights).to(self._device)
            return self._forward(x, w).cpu().numpy()

    def _run_graphed(self, images: np.ndarray, weights: np.ndarray) -> np.ndarray:
        graph = self._graph_for(len(images), images.shape[2], images.shape[3])
        if graph is None:
            return self._run_eager(images, weights)
        return graph.run(images, weights)

    def _graph_for(self, batch: int, height: int, width: int) -> _Graph | None:
        """The bucket's graph: kept ones at once, new ones on the second sighting of the shape."""
        key = (batch_bucket(batch, self.max_graph_batch), height, width)
        graph = self._graphs.get(key)
        if graph is not None:
            self._graphs.move_to_end(key)
            return graph
        if len(self._seen) >= _SEEN_LIMIT:
            self._seen.clear()
        self._seen[key] = self._seen.get(key, 0) + 1
        if self._seen[key] < 2:
            return None
        del self._seen[key]
        return self._capture(key)

    def _capture(self, key: tuple[int, int, int]) -> _Graph | None:
        batch, height, width = key
        pixels = batch * height * width
        if pixels > self.max_graph_pixels:
            log.debug("batch %d at %dx%d is above max_graph_pixels: it runs eagerly", batch, width, height)
            return None
        evicted = False
        while self._graphs and (len(self._graphs) >= self.max_graphs
                                or pixels + sum(b * h * w for b, h, w in self._graphs) > self.max_graph_pixels):
            self._graphs.popitem(last=False)
            evicted = True
        if evicted:
            torch.cuda.empty_cache()  # give the evicted graphs' memory pools back
        try:
            graph = _Graph(self._forward, batch, len(self.style_names), height, width, self._device)
        except torch.cuda.OutOfMemoryError:
            log.warning("no GPU memory to capture a graph for batch %d at %dx%d: running it eagerly",
                        batch, width, height)
            torch.cuda.empty_cache()
            return None
        log.debug("captured a CUDA graph for batch %d at %dx%d", batch, width, height)
        self._graphs[key] = graph
        return graph
