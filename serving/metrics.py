"""Prometheus metrics of one server: a gRPC interceptor for calls, a hook for images.

Two sources, so the servicer stays thin:

- ``MetricsInterceptor`` sees every RPC (the style service, health, reflection): calls in flight,
  calls by final status code, and rejections of calls that never got to an image (a stream refused
  because too many are open, a bad token, a server draining for shutdown);
- the servicer calls ``ServerMetrics.served`` / ``failed`` once per image (a ``Stylize`` call or one
  ``StylizeStream`` frame) with the response or the ``Failure``: images by model and status code,
  rejections by reason, the response's queue, inference and total times, batch size and pixels.

Each server has its own ``CollectorRegistry`` (tests run several servers in one process), exported
by ``prometheus_client``'s HTTP server on its own port when ``ServerConfig.metrics_port`` is set.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, start_http_server

from serving.pipeline import Failure
from serving.security import is_loopback
from styletrain.errors import UserError
from styletrain.v1 import styletrain_pb2 as pb

__all__ = ["REASONS", "MetricsInterceptor", "ServerMetrics", "host_of"]

log = logging.getLogger(__name__)

REASONS: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.RESOURCE_EXHAUSTED: "busy",
    grpc.StatusCode.INVALID_ARGUMENT: "invalid",
    grpc.StatusCode.OUT_OF_RANGE: "invalid",
    grpc.StatusCode.NOT_FOUND: "not_found",
    grpc.StatusCode.UNAUTHENTICATED: "unauthenticated",
    grpc.StatusCode.PERMISSION_DENIED: "unauthenticated",
    grpc.StatusCode.DEADLINE_EXCEEDED: "deadline",
    grpc.StatusCode.UNAVAILABLE: "unavailable",
}
"""The rejection reason of a status code, unless the ``Failure`` names its own (e.g. ``"memory"``).
Other codes (CANCELLED, INTERNAL, UNKNOWN) are failures, not rejections: they show in the
``code`` label of the request counters only."""

SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
QUEUE_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)


class _Call:
    """One RPC as the interceptor tracks it: ended once, and how many images the servicer recorded."""

    __slots__ = ("method", "images", "ended", "lock")

    def __init__(self, method: str) -> None:
        self.method, self.images, self.ended, self.lock = method, 0, False, threading.Lock()


_current_call: contextvars.ContextVar[_Call | None] = contextvars.ContextVar("styletrain_metrics_call", default=None)


class ServerMetrics:
    """The metrics of one server in a private registry; ``start``/``stop`` its HTTP endpoint.

    ``models``: the loaded model names; a failed request's ``model`` label is the requested model
    only when it is one of them (else ``""``), so clients cannot grow the label set.
    ``host``/``port``: where ``start`` serves ``/metrics``; ``port=None`` keeps the endpoint off
    (the metrics are still recorded), ``0`` picks a free port (then read ``port`` after ``start``).
    """

    def __init__(self, models: Iterable[str] = (), *, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.registry = CollectorRegistry()
        self.host, self.port = host, port
        self._models = frozenset(models)
        self._http: tuple[Any, threading.Thread] | None = None
        self._http_lock = threading.Lock()
        r = self.registry
        ProcessCollector(registry=r)  # process_resident_memory_bytes, process_cpu_seconds_total, ...
        self.rpcs = Counter("styletrain_rpcs", "gRPC calls by method and final status code "
                            "(a StylizeStream call counts once, however many frames)", ["method", "code"], registry=r)
        self.in_flight = Gauge("styletrain_rpcs_in_flight", "gRPC calls running now, by method", ["method"],
                               registry=r)
        self.requests = Counter("styletrain_requests", "Images: one per Stylize call and per StylizeStream "
                                "frame, by method, model and status code", ["method", "model", "code"], registry=r)
        self.rejections = Counter("styletrain_rejections", "Requests refused, by method and reason (busy, memory, "
                                  "invalid, not_found, unauthenticated, deadline, unavailable)", ["method", "reason"],
                                  registry=r)
        self.queue_seconds = Histogram("styletrain_queue_seconds", "Time a served image waited in the batching "
                                       "queue (0 without batching)", ["model"], buckets=QUEUE_SECONDS, registry=r)
        self.inference_seconds = Histogram("styletrain_inference_seconds", "Model run time of a served image "
                                           "(its share of the batch)", ["model"], buckets=SECONDS, registry=r)
        self.request_seconds = Histogram("styletrain_request_seconds", "Server time of a served image, from "
                                         "receipt to encoded result", ["method", "model"], buckets=SECONDS,
                                         registry=r)
        self.batch_size = Histogram("styletrain_batch_size", "Images run together in a served image's batch",
                                    ["model"], buckets=BATCH_SIZES, registry=r)
        self.pixels = Counter("styletrain_pixels", "Output pixels stylized (width x height), by model", ["model"],
                              registry=r)

    # -- the servicer's hook: one call per image ------------------------------------------------

    def served(self, method: str, response: pb.StylizeResponse) -> None:
        """Record a stylized image from its response's fields."""
        self._count_image()
        model = response.model
        self.requests.labels(method, model, grpc.StatusCode.OK.name).inc()
        self.queue_seconds.labels(model).observe(response.queue_ms / 1000)
        self.inference_seconds.labels(model).observe(response.inference_ms / 1000)
        self.request_seconds.labels(method, model).observe(response.total_ms / 1000)
        self.batch_size.labels(model).observe(response.batch_size or 1)
        self.pixels.labels(model).inc(response.width * response.height)

    def failed(self, method: str, request: pb.StylizeRequest, failure: Failure) -> None:
        """Record an image that was refused or failed; ``failure.reason`` overrides ``REASONS``."""
        self._count_image()
        model = request.model if request.model in self._models else ""
        self.requests.labels(method, model, failure.code.name).inc()
        reason = failure.reason or REASONS.get(failure.code)
        if reason:
            self.rejections.labels(method, reason).inc()

    @staticmethod
    def _count_image() -> None:
        call = _current_call.get()
        if call is not None:
            with call.lock:  # a stream's frames may finish on several threads at once
                call.images += 1

    # -- the interceptor's side: one record per RPC ---------------------------------------------

    def interceptor(self) -> MetricsInterceptor:
        return MetricsInterceptor(self)

    def _begin(self, method: str, context: grpc.ServicerContext) -> _Call:
        call = _Call(method)
        self.in_flight.labels(method).inc()
        # A call the client cancels may never return to the wrapper: end it when gRPC says it ended.
        context.add_callback(lambda: self._end(call, grpc.StatusCode.CANCELLED))
        return call

    def _end(self, call: _Call, code: grpc.StatusCode) -> None:
        with call.lock:
            if call.ended:
                return
            call.ended = True
        self.in_flight.labels(call.method).dec()
        self.rpcs.labels(call.method, code.name).inc()
        reason = REASONS.get(code)
        if reason and not call.images:  # rejected before any image (counted per image otherwise)
            self.rejections.labels(call.method, reason).inc()

    # -- the HTTP endpoint ---------------------------------------------------------------------

    def start(self) -> None:
        """Serve ``/metrics`` on ``host:port`` in a thread, if a port is set; ``UserError`` if it cannot bind."""
        if self.port is None:
            return
        with self._http_lock:
            if self._http is not None:
                return
            try:
                server, thread = start_http_server(self.port, addr=self.host, registry=self.registry)
            except (OSError, OverflowError) as exc:  # OverflowError: a port outside 0-65535
                raise UserError(f"cannot serve metrics on {self.host}:{self.port}: "
                                f"{getattr(exc, 'strerror', None) or exc}") from None
            thread.name = "styletrain-metrics"
            self._http = (server, thread)
            self.port = server.server_port
        log.info("metrics on http://%s/metrics", _join(self.host, self.port))
        if not is_loopback(self.host):
            log.warning("metrics on http://%s/metrics are plain HTTP with no authentication, whatever protects "
                        "the gRPC port: anyone who reaches it reads the model names, request counts and process memory",
                        _join(self.host, self.port))

    def stop(self) -> None:
        """Stop the HTTP endpoint (if running) and wait for its thread."""
        with self._http_lock:
            http, self._http = self._http, None
        if http is not None:
            server, thread = http
            server.shutdown()
            server.server_close()
            thread.join()


HEALTH_PREFIX = "/grpc.health.v1.Health/"


class MetricsInterceptor(grpc.ServerInterceptor):
    """Wraps every method handler so its calls are counted by method and final status code."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics

    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
                          handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:  # unknown method: gRPC answers UNIMPLEMENTED itself
            return None
        if handler_call_details.method.startswith(HEALTH_PREFIX):
            # left alone: wrapping hides gRPC's non-blocking Watch callback, and then open health
            # watches could no longer be ended at shutdown (serving.lifecycle)
            return handler
        method = handler_call_details.method.rpartition("/")[2]
        kinds = {(False, False): ("unary_unary", grpc.unary_unary_rpc_method_handler, self._unary),
                 (False, True): ("unary_stream", grpc.unary_stream_rpc_method_handler, self._streaming),
                 (True, False): ("stream_unary", grpc.stream_unary_rpc_method_handler, self._unary),
                 (True, True): ("stream_stream", grpc.stream_stream_rpc_method_handler, self._streaming)}
        attribute, make_handler, wrap = kinds[(handler.request_streaming, handler.response_streaming)]
        return make_handler(wrap(getattr(handler, attribute), method),
                            request_deserializer=handler.request_deserializer,
                            response_serializer=handler.response_serializer)

    def _unary(self, behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
        def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
            call = self.metrics._begin(method, context)
            token = _current_call.set(call)
            try:
                response = behavior(request, context)
            except BaseException:
                self.metrics._end(call, context.code() or grpc.StatusCode.UNKNOWN)
                raise
            finally:
                _current_call.reset(token)
            self.metrics._end(call, context.code() or grpc.StatusCode.OK)
            return response

        return wrapped

    def _streaming(self, behavior: Callable[..., Iterable[Any]], method: str) -> Callable[..., Iterator[Any]]:
        def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            call = self.metrics._begin(method, context)
            token = _current_call.set(call)
            try:
                responses = iter(behavior(request, context))
            except BaseException:
                self.metrics._end(call, context.code() or grpc.StatusCode.UNKNOWN)
                raise
            finally:
                _current_call.reset(token)
            return self._responses(call, responses, context)

        return wrapped

    def _responses(self, call: _Call, responses: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        """The handler's responses, each produced with ``call`` current so the servicer's hook finds it."""
        try:
            while True:
                token = _current_call.set(call)
                try:
                    response = next(responses)
                except StopIteration:
                    self.metrics._end(call, context.code() or grpc.StatusCode.OK)
                    return
                except BaseException:
                    self.metrics._end(call, context.code() or grpc.StatusCode.UNKNOWN)
                    raise
                finally:
                    _current_call.reset(token)
                yield response
        finally:
            close = getattr(responses, "close", None)
            if close is not None:  # run the handler's own clean-up now, not when it is garbage-collected
                close()


def host_of(address: str) -> str:
    """The host part of a gRPC address: ``"[::]:50051"`` -> ``"::"``, ``"127.0.0.1:0"`` -> ``"127.0.0.1"``."""
    return address.rpartition(":")[0].strip("[]") or "0.0.0.0"


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
