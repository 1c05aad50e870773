"""The gRPC style-transfer server: ``create_server`` -> (server, port), ``serve``, ``main``.

The servicer only orders the steps of a request (``serving.pipeline``: select, admit, decode, run,
encode) over models loaded as ``styletrain.runtime`` stylizers (``serving.models``).

Limits, each for a reason:

- a bounded number of images in the server at once (``max_concurrent`` admission slots, held from
  decode to encoded reply); more get RESOURCE_EXHAUSTED at once instead of queueing without bound,
  while health checks and ``ListStyles`` keep answering (they never take a slot or enter a queue);
- with dynamic batching (``serving.batching``), requests and stream frames of one model and size run
  together; a queued request keeps its slot, so slots still bound memory, and at most ``max_queue``
  wait per model (more get RESOURCE_EXHAUSTED with a ``grpc-retry-pushback-ms`` trailer);
- a memory budget (``memory_budget_bytes``): each call holds its estimated peak memory, from the
  image header, while it runs (``serving.memory``); large images run in stages (``run_pixels``);
- explicit maximum message sizes; the pixel count is checked from the image header before
  decoding, formats are restricted to JPEG/PNG/WebP, sides must be >= 16 px (``open_image``);
- a request whose deadline has passed is not run; a cancelled call or an expired deadline cancels
  the call's ``RunOptions``, which stops an image running alone on onnxruntime early (its terminate
  flag), and takes a request still queued out of its batch (a running batch, and torch, finish);
- on SIGTERM (``drain``), health reports NOT_SERVING and keeps answering for ``drain_delay`` seconds
  while new style calls get UNAVAILABLE; then ``stop`` lets in-flight calls finish within a grace
  period and ends open health watches at once (``serving.lifecycle``);
- it binds 127.0.0.1 unless told otherwise; TLS, client certificates and a bearer token are
  options (``serving.security``); reflection (v1 and v1alpha, ``serving.reflection``) can be off.
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
from grpc_health.v1 import health_pb2, health_pb2_grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2

from serving import batching, memory, pipeline, reflection, security
from serving.config import ServerConfig, add_arguments, config_from_args
from serving.lifecycle import DrainInterceptor, IdleWatch, WatchEndingHealthServicer
from serving.metrics import ServerMetrics, host_of
from serving.models import ModelRegistry, model_paths
from serving.pipeline import Failure
from styletrain.errors import UserError
from styletrain.images import warm_up_codecs
from styletrain.runtime import RunOptions
from styletrain.runtime.malloc import release_freed_memory
from styletrain.runtime.ort_env import share_thread_pool
from styletrain.v1 import styletrain_pb2 as pb
from styletrain.v1 import styletrain_pb2_grpc as pb_grpc

__all__ = ["SERVICE_NAME", "ServerConfig", "StyleServer", "StyleTransferServicer", "create_server", "main", "serve"]

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["StyleTransferService"].full_name


class StyleTransferServicer(pb_grpc.StyleTransferServiceServicer):
    """The three RPCs over a ``ModelRegistry``, with admission control and per-call cancellation."""

    def __init__(self, registry: ModelRegistry, config: ServerConfig, metrics: ServerMetrics | None = None) -> None:
        self.registry, self.config = registry, config
        self.batchers = {name: batching.Batcher(m, max_batch=config.batch_size_for(m.device), name=name,
                                                max_delay_ms=config.max_queue_delay_ms, max_queue=config.max_queue)
                         for name, m in registry.models.items() if config.batch_size_for(m.device) > 1}
        largest_batch = max((b.max_batch for b in self.batchers.values()), default=1)
        self.max_concurrent = config.slots(largest_batch)
        self.stream_window = config.window(bool(self.batchers), self.max_concurrent)
        self._slots = threading.BoundedSemaphore(self.max_concurrent)
        self.metrics = metrics or ServerMetrics(registry.models)
        self._streams = threading.BoundedSemaphore(config.max_streams)
        self._memory = memory.MemoryBudget(config.memory_budget_bytes)
        # Frames of a stream in flight: a reader and `stream_window` frames per stream.
        self._frames = futures.ThreadPoolExecutor(config.max_streams * (self.stream_window + 1),
                                                  thread_name_prefix="styletrain-frame") \
            if self.stream_window > 1 else None

    def close(self) -> None:
        """Stop the batch workers and frame threads (after the server has stopped)."""
        for batcher in self.batchers.values():
            batcher.close()
        if self._frames is not None:
            self._frames.shutdown(wait=True)

    def ListStyles(self, request: pb.ListStylesRequest, context: grpc.ServicerContext) -> pb.ListStylesResponse:
        return pb.ListStylesResponse(models=[
            pb.Model(name=name, styles=m.style_names, providers=m.providers, backend=m.backend, device=m.device)
            for name, m in self.registry.models.items()
        ])

    def Stylize(self, request: pb.StylizeRequest, context: grpc.ServicerContext) -> pb.StylizeResponse:
        try:
            response = self._stylize(request, context, _cancelled_when_done(context))
        except Failure as failure:
            if failure.retry_after_ms is not None:
                context.set_trailing_metadata((("grpc-retry-pushback-ms", str(failure.retry_after_ms)),))
            self.metrics.failed("Stylize", request, failure)
            context.abort(failure.code, failure.message)
        self.metrics.served("Stylize", response)
        return response

    def StylizeStream(self, request_iterator: Iterator[pb.StylizeStreamRequest],
                      context: grpc.ServicerContext) -> Iterator[pb.StylizeStreamResponse]:
        if not self._streams.acquire(blocking=False):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"server busy: {self.config.max_streams} streams open; retry later")
        idle: IdleWatch | None = None
        try:
            options = _cancelled_when_done(context)
            if self.config.stream_idle_timeout:  # a quiet client must give its place back
                idle = IdleWatch(context, self.config.stream_idle_timeout)
                request_iterator = idle.frames(request_iterator)

            def one(frame: pb.StylizeStreamRequest) -> pb.StylizeStreamResponse | None:
                """The frame's reply; None once the call has ended."""
                try:
                    response = self._stylize(frame.request, context, options)
                    self.metrics.served("StylizeStream", response)
                    return pb.StylizeStreamResponse(frame_id=frame.frame_id, response=response)
                except Failure as failure:
                    self.metrics.failed("StylizeStream", frame.request, failure)
                    if not context.is_active():
                        return None
                    return pb.StylizeStreamResponse(frame_id=frame.frame_id, error=_frame_status(failure))

            if self._frames is None:
                replies = map(one, request_iterator)
            else:
                replies = batching.in_order(request_iterator, one, window=self.stream_window, executor=self._frames)
            for reply in replies:
                if reply is None:
                    return
                if idle is not None:
                    idle.replied()
                yield reply
        finally:
            if idle is not None:
                idle.close()
            self._streams.release()

    def _stylize(self, request: pb.StylizeRequest, context: grpc.ServicerContext,
                 options: RunOptions) -> pb.StylizeResponse:
        """One image: select, admit, decode, run, encode. Raises ``Failure`` only: anything unexpected
        becomes INTERNAL with an error id, its details in the log, never in the reply."""
        try:
            return self._stylize_steps(request, context, options)
        except Failure:
            raise
        except Exception as exc:
            raise pipeline.internal_error("request failed", exc) from None

    def _stylize_steps(self, request: pb.StylizeRequest, context: grpc.ServicerContext,
                       options: RunOptions) -> pb.StylizeResponse:
        start = time.perf_counter()
        output = pipeline.output_options(request.options, min_side=self.config.min_side)
        selection = pipeline.select(self.registry, request)
        pipeline.check_deadline(context)
        with self._admitted(), memory.admitted(self._memory, selection.stylizer, request.image,
                                               max_pixels=self.config.max_pixels, max_side=output.max_side):
            pixels = pipeline.decode(request.image, max_pixels=self.config.max_pixels,
                                    min_side=self.config.min_side, max_side=output.max_side)
            pipeline.check_output_side(pixels, output)
            pipeline.check_deadline(context)
            batcher = self.batchers.get(selection.name)
            if batcher is None or selection.stylizer.runs_staged(*pixels.shape[:2]):
                # a large image runs alone, in stages: a batch runs whole images, several times the
                # memory the budget charged it
                result, inference_ms = pipeline.run(selection, pixels, options)
                queue_ms, batch_size = 0.0, 1
            else:
                result, inference_ms, queue_ms, batch_size = pipeline.run_batched(
                    batcher, selection, pixels, options, deadline=pipeline.deadline_of(context))
            encoded = pipeline.encode(result, output, max_bytes=self.config.max_message_bytes)
        total_ms = (time.perf_counter() - start) * 1000
        log.debug("stylized %dx%d with %s in %.1f ms", result.width, result.height, selection.name, total_ms)
        return pb.StylizeResponse(image=encoded, width=result.width, height=result.height,
                                  format=request.options.format or pb.IMAGE_FORMAT_JPEG, model=selection.name,
                                  inference_ms=inference_ms, total_ms=total_ms, backend=selection.stylizer.backend,
                                  device=selection.stylizer.device, queue_ms=queue_ms, batch_size=batch_size,
                                  strength_method=pipeline.STRENGTH_METHODS[selection.strength_method])

    @contextlib.contextmanager
    def _admitted(self) -> Iterator[None]:
        """Hold one of ``max_concurrent`` inference slots, or fail at once with RESOURCE_EXHAUSTED."""
        if not self._slots.acquire(blocking=False):
            raise Failure(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"server busy: {self.max_concurrent} inference calls running; retry with backoff")
        try:
            yield
        finally:
            self._slots.release()


def _frame_status(failure: Failure) -> status_pb2.Status:
    """A failed frame's status; the retry hint that a unary call sends as a trailer goes in a
    ``google.rpc.RetryInfo`` detail (a stream's trailers come only when the whole call ends)."""
    status = status_pb2.Status(code=failure.code.value[0], message=failure.message)
    if failure.retry_after_ms is not None:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(failure.retry_after_ms)
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return status


def _cancelled_when_done(context: grpc.ServicerContext) -> RunOptions:
    """Run options for one call, cancelled when the call ends (cancel, deadline, disconnect)."""
    options = RunOptions()
    context.add_callback(options.cancel)
    return options


class StyleServer:
    """A created (not yet started) server: ``start`` warms up then reports SERVING; ``drain`` and
    ``stop`` shut it down."""

    def __init__(self, server: grpc.Server, executor: futures.ThreadPoolExecutor, registry: ModelRegistry,
                 health_servicer: WatchEndingHealthServicer, config: ServerConfig,
                 draining: threading.Event | None = None, servicer: StyleTransferServicer | None = None,
                 metrics: ServerMetrics | None = None) -> None:
        self.server, self.registry, self.health, self.config = server, registry, health_servicer, config
        self.servicer = servicer
        self.metrics = metrics or ServerMetrics(registry.models)
        self._executor = executor
        self._draining = draining or threading.Event()
        self._stopped, self._closed = threading.Event(), threading.Event()

    def start(self) -> None:
        """Start answering (health NOT_SERVING), warm every model up, then report SERVING."""
        self.metrics.start()
        self.server.start()
        self.registry.warm_up(self.config.warm_shapes)
        warm_up_codecs()
        for service in ("", SERVICE_NAME):
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)

    def drain(self, delay: float | None = None, grace: float | None = None) -> threading.Event:
        """Start shutting down without blocking: health reports NOT_SERVING and keeps answering, new
        style calls get UNAVAILABLE; after ``delay`` seconds (default ``config.drain_delay``) ``stop(grace)``.
        Returns the event ``stop`` returns."""
        delay = self.config.drain_delay if delay is None else delay
        if self._draining.is_set() or self._stopped.is_set():
            return self._closed
        self._draining.set()
        self.health.enter_graceful_shutdown()
        log.info("draining: health reports NOT_SERVING and new calls get UNAVAILABLE; stopping in %g s", delay)

        def stop_later() -> None:
            if not self._stopped.wait(delay):  # unless someone called stop meanwhile
                self.stop(grace)

        threading.Thread(target=stop_later, name="styletrain-drain", daemon=True).start()
        return self._closed

    def stop(self, grace: float | None = None) -> threading.Event:
        """Report NOT_SERVING, refuse new calls, end health watches, give in-flight calls ``grace``
        seconds (default ``config.grace``; open streams end at their next frame); returns an event
        set once every call and worker thread has ended."""
        grace = self.config.grace if grace is None else grace
        if not self._stopped.is_set():
            self._stopped.set()
            self._draining.set()
            self.health.enter_graceful_shutdown()
            log.info("shutting down: finishing in-flight calls (grace %g s)", grace)
        stopped = self.server.stop(grace)
        self.health.end_watches()  # after stop: no new watch can open

        def close() -> None:
            stopped.wait()
            self._executor.shutdown(wait=True)
            if self.servicer is not None:
                self.servicer.close()
            self.metrics.stop()
            self._closed.set()

        threading.Thread(target=close, name="styletrain-shutdown", daemon=True).start()
        return self._closed

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return self.server.wait_for_termination(timeout)


def create_server(address: str, models_dir: str | Path | None = None, *,
                  config: ServerConfig | None = None) -> tuple[StyleServer, int]:
    """Load the models and bind ``address`` (``"[::]:0"`` picks a free port); returns (server, port)."""
    config = config or ServerConfig()
    release_freed_memory()  # process-wide: large freed blocks go back to the system (see malloc.py)
    if models_dir is not None:
        config.models_dir = models_dir
    registry = ModelRegistry.from_folder(config.models_dir, providers=config.providers, threads=config.threads,
                                         backend=config.backend, device=config.device, precision=config.precision,
                                         variant=config.variant)
    metrics = ServerMetrics(registry.models, host=host_of(address), port=config.metrics_port)
    servicer = StyleTransferServicer(registry, config, metrics)
    # Enough threads that health checks and rejections never wait behind inference and streams: a
    # call waiting in a batch queue holds a slot, so at most `max_concurrent` threads wait on inference;
    # open streams (ours, reflection's) are capped. Health watches hold no thread (non-blocking Watch).
    reflection_streams = reflection.MAX_STREAMS if config.reflection else 0
    workers = servicer.max_concurrent + config.max_streams + reflection_streams + 4
    draining = threading.Event()
    interceptors: list[grpc.ServerInterceptor] = [DrainInterceptor(f"/{SERVICE_NAME}/", draining)]
    if config.token:
        interceptors.insert(0, security.TokenAuthInterceptor(config.token))
    executor = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="styletrain-rpc")
    interceptors.insert(0, metrics.interceptor())  # outermost: it counts refused calls too
    server = grpc.server(executor, options=config.channel_options(), maximum_concurrent_rpcs=16 * workers,
                         interceptors=interceptors)
    pb_grpc.add_StyleTransferServiceServicer_to_server(servicer, server)
    health_servicer = WatchEndingHealthServicer()
    for service in ("", SERVICE_NAME):
        health_servicer.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if config.reflection:
        health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
        reflection.enable_reflection(server, (SERVICE_NAME, health_name))
    try:
        port = security.bind(server, address, tls_cert=config.tls_cert, tls_key=config.tls_key,
                             tls_ca=config.tls_ca, token=config.token)
    except UserError:
        executor.shutdown(wait=False)
        servicer.close()
        raise
    return StyleServer(server, executor, registry, health_servicer, config, draining, servicer, metrics), port


def serve(address: str = "127.0.0.1:50051", config: ServerConfig | None = None) -> None:
    """Run until SIGTERM or SIGINT, then shut down and return: SIGTERM drains for ``drain_delay``
    first, SIGINT (Ctrl-C) does not; a second signal stops at once, cancelling calls in flight.
    Owns the process: its onnxruntime sessions share one thread pool (``ort_env.share_thread_pool``),
    which stays so even if ``serve`` fails after the models folder has been checked."""
    config = config or ServerConfig()
    model_paths(config.models_dir)  # a missing or empty folder fails before any process-wide change
    # The process is the server's: its onnxruntime sessions can share one thread pool (ort_env).
    share_thread_pool(config.threads)
    server, port = create_server(address, config=config)
    server.start()
    host = address.rpartition(":")[0]
    config = server.config
    access = ", ".join(filter(None, ("TLS" if config.tls_cert else "plaintext",
                                     "client certificates required" if config.tls_ca else "",
                                     "token required" if config.token else "")))
    log.info("serving %s on %s:%d (%s; models: %s)", SERVICE_NAME, host, port, access, server.registry.styles_text())
    received: list[int] = []  # a plain list: no lock is taken inside the signal handler

    previous = {s: signal.signal(s, lambda signum, _frame: received.append(signum))
                for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not received:
            time.sleep(0.1)
        log.info("received %s", signal.Signals(received[0]).name)
        closed = server.drain(None if received[0] == signal.SIGTERM else 0)
        handled = 1
        while not closed.wait(0.1):
            if len(received) > handled:
                handled = len(received)
                log.info("received %s again: stopping now", signal.Signals(received[-1]).name)
                server.stop(0)
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
