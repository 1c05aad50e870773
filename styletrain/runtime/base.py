"""The ``Stylizer`` interface every backend implements, and ``RunOptions``, which carries cancellation.

A stylizer works on arrays so callers can batch: ``run`` takes float32 (B, 3, H, W) images in
[0, 1] and (B, N) style weights (one normalised row per image, or one (N,) row for all) and returns
the stylized batch. ``stylizer(image, weights)`` is the same for one PIL image. Torch-free.
"""

from __future__ import annotations

import abc
import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from styletrain.errors import UserError
from styletrain.images import array_to_pixels, pixels_to_array
from styletrain.metadata import MIN_SIDE, ModelMetadata
from styletrain.runtime.adjust import finish_pixels
from styletrain.styles import with_strength

WHOLE_RUN_BYTES_PER_PIXEL = 600
"""Peak memory of a whole-image run per pixel when a backend knows no better: a width-16 net on
onnxruntime's CPU provider measured 430-570 (``benchmarks/RESULTS.md``, "Serving memory")."""
HOST_COPY_BYTES_PER_PIXEL = 48
"""What a run holds in host memory besides the net's maps: the float32 input and output copies and the
uint8 result (39 measured with the net's work taken out: an identity net in torch on the CPU). All that
a CUDA run holds on the host, in either backend; its maps are in GPU memory, which is not budgeted."""


class RunCancelled(RuntimeError):
    """A run was stopped, or not started, because its ``RunOptions`` were cancelled."""


class NonFiniteOutput(RuntimeError):
    """A model produced NaN or infinite values (a broken model: reported, never turned into black pixels)."""


@dataclass
class RunOptions:
    """Settings shared by the runs of one call: ``cancel()`` stops the current run and refuses later ones.

    The server makes one per gRPC call and cancels it when the call ends (cancel, deadline,
    disconnect); a backend that can interrupt a run hooks in with ``interrupts``.
    """

    cancelled: bool = False
    _stops: list[Callable[[], None]] = field(default_factory=list, init=False, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def cancel(self) -> None:
        """Set the flag and interrupt the runs in progress (safe from any thread, e.g. a gRPC callback)."""
        with self._lock:
            self.cancelled = True
            stops = list(self._stops)
        for stop in stops:
            stop()

    def check(self) -> None:
        """Raise ``RunCancelled`` if cancelled: call it before starting work."""
        if self.cancelled:
            raise RunCancelled("run cancelled: the call it served has ended")

    @contextlib.contextmanager
    def interrupts(self, stop: Callable[[], None]) -> Iterator[None]:
        """While inside, ``cancel()`` calls ``stop`` (how a backend halts its run); checks the flag on entry."""
        with self._lock:
            self.check()
            self._stops.append(stop)
        try:
            yield
        finally:
            with self._lock:
                self._stops.remove(stop)


class Stylizer(abc.ABC):
    """A loaded model, whatever runs it: ``run`` on arrays, a call on one PIL image, ``warm_up``.

    ``backend`` is "onnxruntime" or "torch"; ``device`` "cpu" or "cuda"; ``providers`` names what
    executes the model (onnxruntime's execution providers, or ``torch:<device>``); ``metadata`` is
    the ``ModelMetadata`` stored with the model (style names, net config, training settings).
    """

    backend: str
    device: str
    providers: list[str]
    style_names: list[str]
    metadata: ModelMetadata
    min_side: int = MIN_SIDE

    @abc.abstractmethod
    def run(self, batch: np.ndarray, style_weights: np.ndarray, *,
            options: RunOptions | None = None) -> np.ndarray:
        """float32 (B, 3, H, W) in [0, 1] -> the same shape; ``style_weights`` (B, N) or (N,), normalised.

        Raises ``RunCancelled`` when ``options`` is cancelled before or during the run.
        """

    def __call__(self, image: Image.Image, style_weights: np.ndarray, *, strength: float | None = None,
                 preserve_color: bool = False) -> Image.Image:
        """Stylize one PIL image with (N,) style weights (``run_pixels``: large images in stages), at
        ``strength`` (0..1; None: full), keeping the photo's colours with ``preserve_color``."""
        pixels = np.asarray(image.convert("RGB"))
        weights, method = with_strength(self.style_names, style_weights, strength)
        output = self.run_pixels(pixels, weights)
        return Image.fromarray(finish_pixels(output, pixels, strength=strength, strength_method=method,
                                             preserve=preserve_color))
    def run_pixels(self, pixels: np.ndarray, style_weights: np.ndarray, *,
                   options: RunOptions | None = None) -> np.ndarray:
        """uint8 (H, W, 3) RGB -> the stylized uint8 (H, W, 3), with (N,) weights: what the server runs.

        Converted once each way. Backends that can run a large image in less memory override it
        (``OnnxStylizer`` runs it in stages); ``memory_bytes`` says what a call costs.
        """
        output = self.run(pixels_to_array(pixels), style_weights, options=options)
        if not np.isfinite(output).all():
            raise NonFiniteOutput(f"{type(self).__name__} produced non-finite values")
        return array_to_pixels(output)

    def runs_staged(self, height: int, width: int) -> bool:
        """Whether ``run_pixels`` runs an image of this size in stages (then ``memory_bytes`` is the
        staged cost, which a whole-image ``run``, e.g. in a batch, would exceed several times)."""
        return False

    def memory_bytes(self, height: int, width: int) -> int:
        """Estimated peak memory (bytes) of ``run_pixels`` on a ``height`` x ``width`` image, model excluded."""
        return height * width * WHOLE_RUN_BYTES_PER_PIXEL

    def warm_up(self, side: int = 64) -> None:
        """Run once so the first real request does not pay for kernel selection and allocation."""
        weights = np.full(len(self.style_names), 1.0 / len(self.style_names), dtype=np.float32)
        self.run(np.full((1, 3, side, side), 0.5, dtype=np.float32), weights)


def available_memory() -> int | None:
    """Bytes this machine can give a process now without swapping (Linux ``MemAvailable``; None elsewhere)."""
    try:
        with open("/proc/meminfo") as meminfo:
            return next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return None


def check_fits(stylizer: Stylizer, height: int, width: int, *, available: int | None = None) -> None:
    """Refuse, before it starts, a run that needs more memory than the machine has free (``available``;
    None: ``available_memory()``): it would be killed part-way, or swap for minutes."""
    available = available_memory() if available is None else available
    needed = stylizer.memory_bytes(height, width)
    if available is None or needed <= available:
        return
    side = int(max(height, width) * (0.9 * available / needed) ** 0.5)  # the cost grows with the pixels
    staged = " the exported .onnx model (it runs large images in stages)," if stylizer.backend == "torch" else ""
    raise UserError(f"a {width}x{height} image needs about {_size(needed)} to stylize with this "
                    f"{stylizer.backend} model, more than the {_size(available)} free; use --max-side "
                    f"{side} or less,{staged} or free some memory")


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MiB"


def batch_weights(style_weights: np.ndarray, batch: int, num_styles: int) -> np.ndarray:
    """(N,) or (B, N) weights as a new float32 (B, N) array, one row per image of the batch."""
    w = np.asarray(style_weights, dtype=np.float32)
    if w.ndim == 1:
        w = w[None]
    if w.ndim != 2 or w.shape[1] != num_styles or w.shape[0] not in (1, batch):
        raise ValueError(f"style_weights must be ({num_styles},) or ({batch}, {num_styles}) for a batch of "
                         f"{batch} on a {num_styles}-style model; got shape {np.shape(style_weights)}")
    return np.array(np.broadcast_to(w, (batch, num_styles)))
