"""The gRPC style-transfer server: ``create_server`` -> (server, port), ``serve``, ``main``.

Limits, each for a reason:

- a bounded number of inference calls at once (``max_concurrent``); more get RESOURCE_EXHAUSTED at
  once instead of queueing without bound, while health checks and ``ListStyles`` keep answering;
- explicit maximum message sizes; the pixel count is checked from the image header before
  decoding, formats are restricted to JPEG/PNG/WebP, sides must be >= 16 px (``open_image``);
- a request whose deadline has passed is not run; a cancelled call or an expired deadline sets
  onnxruntime's terminate flag so the running inference stops early;
- ``stop`` flips health to NOT_SERVING, refuses new calls and lets in-flight ones finish within a
  grace period (``serve`` does this on SIGTERM / SIGINT).
"""

from __future__ import annotations

import io
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from serving.models import ModelRegistry, UnknownModel
from styletrain.errors import UserError
from styletrain.export import OnnxStylizer, array_to_image, image_to_array
from styletrain.images import open_image, resize_max_side
from styletrain.v1 import styletrain_pb2 as pb
from styletrain.v1 import styletrain_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["StyleTransfer"].full_name
DEFAULT_MODELS_DIR = Path("checkpoints")
DEFAULT_MAX_MESSAGE_BYTES = 32 * 1024 * 1024
FORMATS = {pb.IMAGE_FORMAT_UNSPECIFIED: "JPEG", pb.IMAGE_FORMAT_JPEG: "JPEG",
           pb.IMAGE_FORMAT_PNG: "PNG", pb.IMAGE_FORMAT_WEBP: "WEBP"}
DEFAULT_QUALITY = 90


@dataclass
class ServerConfig:
    """Everything ``styletrain serve`` can set; the defaults suit one CPU box."""

    models_dir: str | Path = DEFAULT_MODELS_DIR
    threads: int | None = None
    """onnxruntime intra-op threads per model (None: one per physical core)."""
    max_concurrent: int = 2
    """Inference calls (unary calls and stream frames) running at once; more get RESOURCE_EXHAUSTED."""
    max_streams: int = 4
    """Open ``StylizeStream`` calls; each holds a server thread."""
    max_pixels: int = 16_000_000
    min_side: int = 16
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    grace: float = 10.0
    """Seconds in-flight calls get to finish on shutdown."""
    providers: list[str] | None = None
    """onnxruntime providers (None: CUDA first when available, else CPU)."""

    def channel_options(self) -> list[tuple[str, Any]]:
        """Message limits; no SO_REUSEPORT, so a port already in use is an error, not a silent share."""
        return [("grpc.max_receive_message_length", self.max_message_bytes),
                ("grpc.max_send_message_length", self.max_message_bytes), ("grpc.so_reuseport", 0)]


class _Failure(Exception):
    """A request that cannot be served: the status code and the message for the client."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class StyleTransferServicer(pb_grpc.StyleTransferServicer):
    """The three RPCs over a ``ModelRegistry``, with admission control and per-call cancellation."""

    def __init__(self, registry: ModelRegistry, config: ServerConfig) -> None:
        self.registry, self.config = registry, config
        self._slots = threading.BoundedSemaphore(config.max_concurrent)
        self._streams = threading.BoundedSemaphore(config.max_streams)

    def ListStyles(self, request: pb.ListStylesRequest, context: grpc.ServicerContext) -> pb.ListStylesResponse:
        return pb.ListStylesResponse(models=[
            pb.Model(name=name, styles=m.style_names, providers=m.providers)
            for name, m in self.registry.models.items()
        ])

    def Stylize(self, request: pb.StylizeRequest, context: grpc.ServicerContext) -> pb.StylizeResponse:
        try:
            return self._stylize(request, context, _Cancellation(context))
        except _Failure as failure:
            context.abort(failure.code, failure.message)

    def StylizeStream(self, request_iterator: Iterator[pb.StylizeFrame],
                      context: grpc.ServicerContext) -> Iterator[pb.StylizedFrame]:
        if not self._streams.acquire(blocking=False):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"server busy: {self.config.max_streams} streams open; retry later")
        try:
            cancellation = _Cancellation(context)
            for frame in request_iterator:
                try:
                    response = self._stylize(frame.request, context, cancellation)
                    yield pb.StylizedFrame(frame_id=frame.frame_id, response=response)
                except _Failure as failure:
                    if not context.is_active():
                        return
                    error = pb.Error(code=failure.code.value[0], message=failure.message)
                    yield pb.StylizedFrame(frame_id=frame.frame_id, error=error)
        finally:
            self._streams.release()

    def _stylize(self, request: pb.StylizeRequest, context: grpc.ServicerContext,
                 cancellation: _Cancellation) -> pb.StylizeResponse:
        """One image: select, admit, decode, run, encode. Raises ``_Failure``."""
        start = time.perf_counter()
        format_name, quality, max_side = self._output_options(request.options)
        try:
            selection = self.registry.select(model=request.model, style=request.style, blend=dict(request.blend))
        except UnknownModel as exc:
            raise _Failure(grpc.StatusCode.NOT_FOUND, str(exc)) from None
        except UserError as exc:
            raise _Failure(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        _check_deadline(context)
        if not self._slots.acquire(blocking=False):
            raise _Failure(grpc.StatusCode.RESOURCE_EXHAUSTED,
                           f"server busy: {self.config.max_concurrent} inference calls running; retry with backoff")
        try:
            try:
                image = open_image(request.image, max_pixels=self.config.max_pixels, min_side=self.config.min_side)
            except UserError as exc:
                raise _Failure(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
            image = resize_max_side(image, max_side)
            _check_deadline(context)
            run_start = time.perf_counter()
            try:
                output = selection.stylizer.run(image_to_array(image), selection.weights,
                                                run_options=cancellation.options_for(selection.stylizer))
            except Exception as exc:
                if not context.is_active():
                    raise _Failure(grpc.StatusCode.CANCELLED, "call ended before inference finished") from None
                log.exception("inference failed on %s", selection.name)
                raise _Failure(grpc.StatusCode.INTERNAL, f"inference failed: {exc}") from None
            inference_ms = (time.perf_counter() - run_start) * 1000
            if not np.isfinite(output).all():
                log.error("model %s produced non-finite values", selection.name)
                raise _Failure(grpc.StatusCode.INTERNAL, f"model {selection.name} produced non-finite values")
            result = array_to_image(output)
            encoded = io.BytesIO()
            result.save(encoded, format=format_name, quality=quality)
        finally:
            self._slots.release()
        total_ms = (time.perf_counter() - start) * 1000
        log.debug("stylized %dx%d with %s in %.1f ms", result.width, result.height, selection.name, total_ms)
        return pb.StylizeResponse(image=encoded.getvalue(), width=result.width, height=result.height,
                                  format=request.options.format or pb.IMAGE_FORMAT_JPEG, model=selection.name,
                                  inference_ms=inference_ms, total_ms=total_ms)

    def _output_options(self, options: pb.OutputOptions) -> tuple[str, int, int | None]:
        """(PIL format, quality, max side or None), or INVALID_ARGUMENT."""
        if options.format not in FORMATS:
            raise _Failure(grpc.StatusCode.INVALID_ARGUMENT, f"unknown output format {options.format}")
        if not 0 <= options.quality <= 100:
            raise _Failure(grpc.StatusCode.INVALID_ARGUMENT, f"quality must be 1-100 (0: default); got {options.quality}")
        if options.max_side and options.max_side < self.config.min_side:
            raise _Failure(grpc.StatusCode.INVALID_ARGUMENT,
                           f"max_side must be at least {self.config.min_side} (0: keep the size); got {options.max_side}")
        return FORMATS[options.format], options.quality or DEFAULT_QUALITY, options.max_side or None


class _Cancellation:
    """Stops the call's current onnxruntime run when the call ends (cancel, deadline, disconnect)."""

    def __init__(self, context: grpc.ServicerContext) -> None:
        self.ended = False
        self.current: ort.RunOptions | None = None
        context.add_callback(self._end)

    def _end(self) -> None:
        self.ended = True
        if self.current is not None:
            self.current.terminate = True

    def options_for(self, stylizer: OnnxStylizer) -> ort.RunOptions:
        """Run options for the next run (the stylizer's, with the terminate flag wired up)."""
        self.current = stylizer.run_options()
        self.current.terminate = self.ended
        return self.current


def _warm_up_codecs() -> None:
    """Encode and decode a small image in every format: Pillow loads its plugins on first use."""
    image = array_to_image(np.full((1, 3, 32, 32), 0.5, dtype=np.float32))
    for format_name in sorted(set(FORMATS.values())):
        buffer = io.BytesIO()
        image.save(buffer, format=format_name)
        open_image(buffer.getvalue())


def _check_deadline(context: grpc.ServicerContext) -> None:
    """Do not start work the client can no longer receive."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        raise _Failure(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed before the request ran")
    if not context.is_active():
        raise _Failure(grpc.StatusCode.CANCELLED, "call cancelled before the request ran")


class StyleServer:
    """A created (not yet started) server: ``start`` warms up then reports SERVING; ``stop`` drains."""

    def __init__(self, server: grpc.Server, executor: futures.ThreadPoolExecutor, registry: ModelRegistry,
                 health_servicer: health.HealthServicer, config: ServerConfig) -> None:
        self.server, self.registry, self.health, self.config = server, registry, health_servicer, config
        self._executor = executor
        self._stopped = threading.Event()

    def start(self) -> None:
        """Start answering (health NOT_SERVING), warm every model up, then report SERVING."""
        self.server.start()
        self.registry.warm_up()
        _warm_up_codecs()
        for service in ("", SERVICE_NAME):
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace: float | None = None) -> threading.Event:
        """Report NOT_SERVING, refuse new calls, give in-flight ones ``grace`` seconds (default
        ``config.grace``); returns an event set once every call and worker thread has ended."""
        grace = self.config.grace if grace is None else grace
        if not self._stopped.is_set():
            self._stopped.set()
            self.health.enter_graceful_shutdown()
            log.info("shutting down: finishing in-flight calls (grace %.1f s)", grace)
        stopped, closed = self.server.stop(grace), threading.Event()

        def close() -> None:
            stopped.wait()
            self._executor.shutdown(wait=True)
            closed.set()

        threading.Thread(target=close, name="styletrain-shutdown", daemon=True).start()
        return closed

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return self.server.wait_for_termination(timeout)


def create_server(address: str, models_dir: str | Path | None = None, *,
                  config: ServerConfig | None = None) -> tuple[StyleServer, int]:
    """Load the models and bind ``address`` (``"[::]:0"`` picks a free port); returns (server, port)."""
    config = config or ServerConfig()
    if models_dir is not None:
        config.models_dir = models_dir
    registry = ModelRegistry.from_folder(config.models_dir, providers=config.providers, threads=config.threads)
    # Enough threads that health checks and rejections never wait behind inference and streams.
    workers = config.max_concurrent + config.max_streams + 4
    executor = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="styletrain-rpc")
    server = grpc.server(executor, options=config.channel_options(), maximum_concurrent_rpcs=16 * workers)
    pb_grpc.add_StyleTransferServicer_to_server(StyleTransferServicer(registry, config), server)
    health_servicer = health.HealthServicer()
    for service in ("", SERVICE_NAME):
        health_servicer.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise UserError(f"cannot listen on {address}: {exc}") from None
    if port == 0:
        raise UserError(f"cannot listen on {address}: is the port in use?")
    return StyleServer(server, executor, registry, health_servicer, config), port


def serve(address: str = "[::]:50051", config: ServerConfig | None = None) -> None:
    """Run until SIGTERM or SIGINT, then drain within the grace period and return."""
    server, port = create_server(address, config=config)
    server.start()
    host = address.rpartition(":")[0]
    log.info("serving %s on %s:%d (models: %s)", SERVICE_NAME, host, port, server.registry.styles_text())
    received: list[int] = []  # a plain list: no lock is taken inside the signal handler

    previous = {s: signal.signal(s, lambda signum, _frame: received.append(signum))
                for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not received:
            time.sleep(0.1)
        log.info("received %s", signal.Signals(received[0]).name)
        server.stop().wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        server.stop(0)


def main(argv: list[str] | None = None) -> int:
    """``python -m serving.server [options]`` is ``styletrain serve [options]``."""
    from styletrain.cli import main as cli_main

    return cli_main(["serve", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
