"""The gRPC style-transfer server: ``create_server`` -> (server, port), ``serve``, ``main``.

The servicer only orders the steps of a request (``serving.pipeline``: select, admit, decode, run,
encode) over models loaded as ``styletrain.runtime`` stylizers (``serving.models``).

Limits, each for a reason:

- a bounded number of inference calls at once (``max_concurrent``); more get RESOURCE_EXHAUSTED at
  once instead of queueing without bound, while health checks and ``ListStyles`` keep answering;
- a memory budget (``memory_budget_bytes``): each call holds its estimated peak memory, from the
  image header, while it runs (``serving.memory``); large images run in stages (``run_pixels``);
- explicit maximum message sizes; the pixel count is checked from the image header before
  decoding, formats are restricted to JPEG/PNG/WebP, sides must be >= 16 px (``open_image``);
- a request whose deadline has passed is not run; a cancelled call or an expired deadline cancels
  the call's ``RunOptions``, which stops the running inference early (onnxruntime's terminate flag);
- ``stop`` flips health to NOT_SERVING, refuses new calls and lets in-flight ones finish within a
  grace period (``serve`` does this on SIGTERM / SIGINT).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from serving import memory, pipeline
from serving.config import ServerConfig, add_arguments, config_from_args
from serving.models import ModelRegistry
from serving.pipeline import Failure
from styletrain.errors import UserError
from styletrain.images import warm_up_codecs
from styletrain.runtime import RunOptions
from styletrain.runtime.malloc import release_freed_memory
from styletrain.v1 import styletrain_pb2 as pb
from styletrain.v1 import styletrain_pb2_grpc as pb_grpc

__all__ = ["SERVICE_NAME", "ServerConfig", "StyleServer", "StyleTransferServicer", "create_server", "main", "serve"]

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["StyleTransfer"].full_name


class StyleTransferServicer(pb_grpc.StyleTransferServicer):
    """The three RPCs over a ``ModelRegistry``, with admission control and per-call cancellation."""

    def __init__(self, registry: ModelRegistry, config: ServerConfig) -> None:
        self.registry, self.config = registry, config
        self._slots = threading.BoundedSemaphore(config.max_concurrent)
        self._streams = threading.BoundedSemaphore(config.max_streams)
        self._memory = memory.MemoryBudget(config.memory_budget_bytes)

    def ListStyles(self, request: pb.ListStylesRequest, context: grpc.ServicerContext) -> pb.ListStylesResponse:
        return pb.ListStylesResponse(models=[
            pb.Model(name=name, styles=m.style_names, providers=m.providers)
            for name, m in self.registry.models.items()
        ])

    def Stylize(self, request: pb.StylizeRequest, context: grpc.ServicerContext) -> pb.StylizeResponse:
        try:
            return self._stylize(request, context, _cancelled_when_done(context))
        except Failure as failure:
            context.abort(failure.code, failure.message)

    def StylizeStream(self, request_iterator: Iterator[pb.StylizeFrame],
                      context: grpc.ServicerContext) -> Iterator[pb.StylizedFrame]:
        if not self._streams.acquire(blocking=False):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"server busy: {self.config.max_streams} streams open; retry later")
        try:
            options = _cancelled_when_done(context)
            for frame in request_iterator:
                try:
                    response = self._stylize(frame.request, context, options)
                    yield pb.StylizedFrame(frame_id=frame.frame_id, response=response)
                except Failure as failure:
                    if not context.is_active():
                        return
                    error = pb.Error(code=failure.code.value[0], message=failure.message)
                    yield pb.StylizedFrame(frame_id=frame.frame_id, error=error)
        finally:
            self._streams.release()

    def _stylize(self, request: pb.StylizeRequest, context: grpc.ServicerContext,
                 options: RunOptions) -> pb.StylizeResponse:
        """One image: select, admit, decode, run, encode. Raises ``Failure``."""
        start = time.perf_counter()
        output = pipeline.output_options(request.options, min_side=self.config.min_side)
        selection = pipeline.select(self.registry, request)
        pipeline.check_deadline(context)
        with self._admitted(), memory.admitted(self._memory, selection.stylizer, request.image,
                                               max_pixels=self.config.max_pixels, max_side=output.max_side):
            image = pipeline.decode(request.image, max_pixels=self.config.max_pixels,
                                    min_side=self.config.min_side, max_side=output.max_side)
            pipeline.check_deadline(context)
            result, inference_ms = pipeline.run(selection, image, options)
            encoded = pipeline.encode(result, output)
        total_ms = (time.perf_counter() - start) * 1000
        log.debug("stylized %dx%d with %s in %.1f ms", result.width, result.height, selection.name, total_ms)
        return pb.StylizeResponse(image=encoded, width=result.width, height=result.height,
                                  format=request.options.format or pb.IMAGE_FORMAT_JPEG, model=selection.name,
                                  inference_ms=inference_ms, total_ms=total_ms)

    @contextlib.contextmanager
    def _admitted(self) -> Iterator[None]:
        """Hold one of ``max_concurrent`` inference slots, or fail at once with RESOURCE_EXHAUSTED."""
        if not self._slots.acquire(blocking=False):
            raise Failure(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"server busy: {self.config.max_concurrent} inference calls running; retry with backoff")
        try:
            yield
        finally:
            self._slots.release()


def _cancelled_when_done(context: grpc.ServicerContext) -> RunOptions:
    """Run options for one call, cancelled when the call ends (cancel, deadline, disconnect)."""
    options = RunOptions()
    context.add_callback(options.cancel)
    return options


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
        warm_up_codecs()
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
    release_freed_memory()  # process-wide: large freed blocks go back to the system (see malloc.py)
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
    """``python -m serving.server [options]``: the server alone, with the options of ``styletrain serve``."""
    parser = argparse.ArgumentParser(prog="python -m serving.server", description="Serve exported .onnx "
                                     "style-transfer models over gRPC (the same as `styletrain serve`).")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        serve(*config_from_args(args))
    except UserError as exc:
        print(f"serving.server: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
