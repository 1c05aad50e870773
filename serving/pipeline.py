"""The steps of one stylize request as plain functions: options, select, decode, run (or run_batched), encode.

Each step raises ``Failure`` with the gRPC status and the message for the client; the servicer in
``serving.server`` only orders the steps and holds the admission slots.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from concurrent.futures import CancelledError
from dataclasses import dataclass

import grpc
import numpy as np
from PIL import Image

from serving.batching import Batcher, BatcherClosed, DeadlineExpired, QueueFull
from serving.models import ModelRegistry, Selection, UnknownModel, UnknownStyle
from styletrain.errors import UserError, shorten
from styletrain.images import (MAX_OUTPUT_SIDE, array_to_pixels, encode_image, open_image, pixels_to_array,
                               resize_max_side)
from styletrain.runtime import NonFiniteOutput, RunCancelled, RunOptions
from styletrain.runtime.adjust import finish_pixels
from styletrain.styles import with_strength
from styletrain.v1 import styletrain_pb2 as pb

log = logging.getLogger(__name__)

FORMATS = {pb.IMAGE_FORMAT_UNSPECIFIED: "JPEG", pb.IMAGE_FORMAT_JPEG: "JPEG",
           pb.IMAGE_FORMAT_PNG: "PNG", pb.IMAGE_FORMAT_WEBP: "WEBP"}
DEFAULT_QUALITY = 90
MAX_BLEND_ENTRIES = 64
"""A blend names at most this many styles (or as many as the largest served model holds, if more)."""
MAX_MESSAGE_CHARS = 500
"""Longest error message sent to a client. gRPC sends it percent-encoded in a trailer, and clients
refuse trailers above 8 KiB (with RESOURCE_EXHAUSTED, which this server means as "busy, retry")."""
REPLY_OVERHEAD_BYTES = 4096
"""Room a reply needs besides its image: the other fields, a stream frame's wrapper."""


class Failure(Exception):
    """A request that cannot be served: the status code, the message for the client (cut to
    ``MAX_MESSAGE_CHARS`` so no echoed input can make it too long to send), for an overloaded server
    when to retry (sent as the ``grpc-retry-pushback-ms`` trailer), and for the metrics a rejection
    reason where the code alone does not tell it (``"memory"`` vs ``"busy"``)."""

    def __init__(self, code: grpc.StatusCode, message: str, *, retry_after_ms: int | None = None,
                 reason: str | None = None) -> None:
        message = shorten(message, MAX_MESSAGE_CHARS)
        super().__init__(message)
        self.code, self.message, self.retry_after_ms, self.reason = code, message, retry_after_ms, reason


@dataclass(frozen=True)
class Output:
    """How the client wants the result: PIL format name, quality, longest side (None: keep the size)."""

    format: str
    quality: int
    max_side: int | None


def output_options(options: pb.OutputOptions, *, min_side: int) -> Output:
    """Check the request's output options; INVALID_ARGUMENT names the bad one."""
    if options.format not in FORMATS:
        raise Failure(grpc.StatusCode.INVALID_ARGUMENT, f"unknown output format {options.format}")
    if not 0 <= options.quality <= 100:
        raise Failure(grpc.StatusCode.INVALID_ARGUMENT, f"quality must be 1-100 (0: default); got {options.quality}")
    if options.max_side and options.max_side < min_side:
        raise Failure(grpc.StatusCode.INVALID_ARGUMENT,
                      f"max_side must be at least {min_side} (0: keep the size); got {options.max_side}")
    return Output(FORMATS[options.format], options.quality or DEFAULT_QUALITY, options.max_side or None)


STRENGTH_METHODS = {"": pb.STRENGTH_METHOD_UNSPECIFIED, "identity": pb.STRENGTH_METHOD_IDENTITY,
                    "pixel": pb.STRENGTH_METHOD_PIXEL_BLEND}


def select(registry: ModelRegistry, request: pb.StylizeRequest) -> Selection:
    """The model, weights and output adjustments for the request: NOT_FOUND for a model or style no
    model holds, INVALID_ARGUMENT for other bad choices (too many blend entries, bad weights or
    strength, a style of another model)."""
    entries = len(request.style_blend.weights)
    limit = max([MAX_BLEND_ENTRIES, *(len(m.style_names) for m in registry.models.values())])
    if entries > limit:
        raise Failure(grpc.StatusCode.INVALID_ARGUMENT, f"a blend names at most {limit} styles; got {entries}")
    strength = request.strength if request.HasField("strength") else None
    try:
        selection = registry.select(model=request.model, style=request.style,
                                    blend=dict(request.style_blend.weights))
        weights, method = with_strength(selection.stylizer.style_names, selection.weights, strength)
    except (UnknownModel, UnknownStyle) as exc:
        raise Failure(grpc.StatusCode.NOT_FOUND, str(exc)) from None
    except UserError as exc:
        raise Failure(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
    return dataclasses.replace(selection, weights=weights, strength=strength, strength_method=method,
                               preserve_color=request.preserve_color)


def decode(data: bytes, *, max_pixels: int, min_side: int, max_side: int | None) -> np.ndarray:
    """The request's image as uint8 (H, W, 3) pixels, within the limits and shrunk to ``max_side``;
    INVALID_ARGUMENT if bad, also when shrinking would take a side below ``min_side``. Pixels (3
    bytes each), so the decoded PIL image (4) is freed before the run."""
    try:
        image = open_image(data, max_pixels=max_pixels, min_side=min_side, reduce_to=max_side)
        return np.asarray(resize_max_side(image, max_side, min_side=min_side))
    except UserError as exc:
        raise Failure(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None


def check_output_side(pixels: np.ndarray, output: Output) -> None:
    """INVALID_ARGUMENT before the run if the result would be too large a side for the requested format
    (JPEG 65500 px, WebP 16383): the encoder would fail only once the inference is done."""
    limit = MAX_OUTPUT_SIDE.get(f".{output.format.lower()}")
    height, width = pixels.shape[:2]
    if limit is not None and max(height, width) > limit:
        raise Failure(grpc.StatusCode.INVALID_ARGUMENT,
                      f"the stylized image would be {width}x{height}, but {output.format} holds at most {limit} px "
                      "a side; ask for PNG or a smaller max_side")


def run(selection: Selection, pixels: np.ndarray, options: RunOptions) -> tuple[Image.Image, float]:
    """Stylize uint8 ``pixels``: (result, model run time in ms). CANCELLED once the call ended, INTERNAL on errors.

    Pixels in and out (``Stylizer.run_pixels``): large images run in stages, so memory grows by
    bytes per pixel, not hundreds (``styletrain.runtime.staged``).
    """
    start = time.perf_counter()
    try:
        result = selection.stylizer.run_pixels(pixels, selection.weights, options=options)
    except NonFiniteOutput:
        raise _non_finite(selection) from None
    except Exception as exc:
        if isinstance(exc, RunCancelled) or options.cancelled:
            raise Failure(grpc.StatusCode.CANCELLED, "call ended before inference finished") from None
        raise internal_error(f"inference failed on model {selection.name}", exc) from None
    run_ms = (time.perf_counter() - start) * 1000
    return _finished(selection, result, pixels), run_ms


def run_batched(batcher: Batcher, selection: Selection, pixels: np.ndarray, options: RunOptions, *,
                deadline: float | None) -> tuple[Image.Image, float, float, int]:
    """Stylize uint8 ``pixels`` in a batch: (result, its share of the batch's run time in ms, queue ms,
    batch size).

    RESOURCE_EXHAUSTED with a retry hint when the queue is full; DEADLINE_EXCEEDED when ``deadline``
    (``time.monotonic()``) passed in the queue; CANCELLED when the call ended first (``options``
    cancelled: the request leaves the queue); UNAVAILABLE on shutdown; INTERNAL on errors.
    """
    try:
        future = batcher.submit(pixels_to_array(pixels)[0], selection.weights, deadline=deadline)
    except QueueFull as exc:
        raise Failure(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc), retry_after_ms=exc.retry_after_ms) from None
    except BatcherClosed as exc:
        raise Failure(grpc.StatusCode.UNAVAILABLE, str(exc)) from None
    try:
        with options.interrupts(future.cancel):
            batched = future.result()
    except (RunCancelled, CancelledError):
        future.cancel()
        raise Failure(grpc.StatusCode.CANCELLED, "call ended before inference finished") from None
    except DeadlineExpired as exc:
        raise Failure(grpc.StatusCode.DEADLINE_EXCEEDED, str(exc)) from None
    except BatcherClosed as exc:
        raise Failure(grpc.StatusCode.UNAVAILABLE, str(exc)) from None
    except Exception as exc:
        raise internal_error(f"inference failed on model {selection.name}", exc) from None
    if not np.isfinite(batched.image).all():
        raise _non_finite(selection)
    result = _finished(selection, array_to_pixels(batched.image), pixels)
    return result, batched.run_ms / batched.batch_size, batched.queue_ms, batched.batch_size


def internal_error(what: str, exc: Exception) -> Failure:
    """INTERNAL with an error id; the exception (graph nodes, shapes, paths) goes to the log only."""
    error_id = uuid.uuid4().hex[:8]
    log.error("%s (error id %s)", what, error_id, exc_info=exc)
    return Failure(grpc.StatusCode.INTERNAL, f"{what} (error id {error_id} in the server log)")


def _non_finite(selection: Selection) -> Failure:
    log.error("model %s produced non-finite values", selection.name)
    return Failure(grpc.StatusCode.INTERNAL, f"model {selection.name} produced non-finite values")


def _finished(selection: Selection, result: np.ndarray, pixels: np.ndarray) -> Image.Image:
    """The model's uint8 output after the request's adjustments (strength by pixel blending, colour)."""
    return Image.fromarray(finish_pixels(result, pixels, strength=selection.strength,
                                         strength_method=selection.strength_method,
                                         preserve=selection.preserve_color))


def encode(image: Image.Image, output: Output, *, max_bytes: int) -> bytes:
    """The result as bytes in the requested format and quality; INVALID_ARGUMENT if the reply would
    exceed ``max_bytes`` (the message limit), which gRPC would report as a retryable RESOURCE_EXHAUSTED."""
    encoded = encode_image(image, output.format, output.quality)
    if len(encoded) + REPLY_OVERHEAD_BYTES > max_bytes:
        raise Failure(grpc.StatusCode.INVALID_ARGUMENT,
                      f"the stylized image is {len(encoded) / 2**20:.1f} MiB as {output.format}, more than this "
                      f"server's message limit of {max_bytes / 2**20:.1f} MiB; ask for JPEG or WebP, a lower "
                      "quality or a smaller max_side")
    return encoded


def deadline_of(context: grpc.ServicerContext) -> float | None:
    """The call's deadline as a ``time.monotonic()`` time (None: no deadline)."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def check_deadline(context: grpc.ServicerContext) -> None:
    """Do not start work the client can no longer receive."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        raise Failure(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed before the request ran")
    if not context.is_active():
        raise Failure(grpc.StatusCode.CANCELLED, "call cancelled before the request ran")
