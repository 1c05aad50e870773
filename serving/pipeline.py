"""The steps of one stylize request as plain functions: options, select, decode, run, encode.

Each step raises ``Failure`` with the gRPC status and the message for the client; the servicer in
``serving.server`` only orders the steps and holds the admission slots.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import grpc
import numpy as np
from PIL import Image

from serving.models import ModelRegistry, Selection, UnknownModel
from styletrain.errors import UserError
from styletrain.images import encode_image, open_image, resize_max_side
from styletrain.runtime import NonFiniteOutput, RunCancelled, RunOptions
from styletrain.v1 import styletrain_pb2 as pb

log = logging.getLogger(__name__)

FORMATS = {pb.IMAGE_FORMAT_UNSPECIFIED: "JPEG", pb.IMAGE_FORMAT_JPEG: "JPEG",
           pb.IMAGE_FORMAT_PNG: "PNG", pb.IMAGE_FORMAT_WEBP: "WEBP"}
DEFAULT_QUALITY = 90


class Failure(Exception):
    """A request that cannot be served: the status code and the message for the client."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


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


def select(registry: ModelRegistry, request: pb.StylizeRequest) -> Selection:
    """The model and weights for the request: NOT_FOUND for an unknown model, INVALID_ARGUMENT for bad styles."""
    try:
        return registry.select(model=request.model, style=request.style, blend=dict(request.blend))
    except UnknownModel as exc:
        raise Failure(grpc.StatusCode.NOT_FOUND, str(exc)) from None
    except UserError as exc:
        raise Failure(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None


def decode(data: bytes, *, max_pixels: int, min_side: int, max_side: int | None) -> np.ndarray:
    """The request's image as uint8 (H, W, 3) pixels, within the limits and shrunk to ``max_side``;
    INVALID_ARGUMENT if bad. Pixels (3 bytes each), so the decoded PIL image (4) is freed before the run."""
    try:
        image = open_image(data, max_pixels=max_pixels, min_side=min_side)
    except UserError as exc:
        raise Failure(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
    return np.asarray(resize_max_side(image, max_side))


def run(selection: Selection, pixels: np.ndarray, options: RunOptions) -> tuple[Image.Image, float]:
    """Stylize uint8 ``pixels``: (result, model run time in ms). CANCELLED once the call ended, INTERNAL on errors.

    Pixels in and out (``Stylizer.run_pixels``): large images run in stages, so memory grows by
    bytes per pixel, not hundreds (``styletrain.runtime.staged``).
    """
    start = time.perf_counter()
    try:
        result = selection.stylizer.run_pixels(pixels, selection.weights, options=options)
    except NonFiniteOutput:
        log.error("model %s produced non-finite values", selection.name)
        raise Failure(grpc.StatusCode.INTERNAL, f"model {selection.name} produced non-finite values") from None
    except Exception as exc:
        if isinstance(exc, RunCancelled) or options.cancelled:
            raise Failure(grpc.StatusCode.CANCELLED, "call ended before inference finished") from None
        log.exception("inference failed on %s", selection.name)
        raise Failure(grpc.StatusCode.INTERNAL, f"inference failed: {exc}") from None
    run_ms = (time.perf_counter() - start) * 1000
    return Image.fromarray(result), run_ms


def encode(image: Image.Image, output: Output) -> bytes:
    """The result as bytes in the requested format and quality."""
    return encode_image(image, output.format, output.quality)


def check_deadline(context: grpc.ServicerContext) -> None:
    """Do not start work the client can no longer receive."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        raise Failure(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed before the request ran")
    if not context.is_active():
        raise Failure(grpc.StatusCode.CANCELLED, "call cancelled before the request ran")
