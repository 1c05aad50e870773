"""Shutting down the way load balancers and Kubernetes expect.

On SIGTERM the server first *drains*: health reports NOT_SERVING (pushed to open ``Watch`` streams)
and keeps answering for ``drain_delay`` seconds, so health checkers see NOT_SERVING and move the
traffic away, while new calls to the style service are refused with UNAVAILABLE ("server is
shutting down", which clients may retry elsewhere). Then the server stops: the listener closes,
calls in flight get the grace period to finish, and the health ``Watch`` streams end at once (they
would otherwise hold an idle server for the whole grace period).

``DrainInterceptor`` does the refusing; ``WatchEndingHealthServicer`` is grpc_health's servicer
(``enter_graceful_shutdown`` sets NOT_SERVING for good but leaves watches open) plus ``end_watches``.
``IdleWatch`` ends a stream whose client went quiet, so it gives its place back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2

from serving.security import refusal

SHUTTING_DOWN = "server is shutting down; retry on another server"
T = TypeVar("T")
log = logging.getLogger(__name__)


class WatchEndingHealthServicer(health.HealthServicer):
    """``grpc_health.v1.health.HealthServicer`` whose open ``Watch`` streams can be ended (with OK)."""

    def __init__(self) -> None:
        super().__init__()
        self._watch_lock = threading.Lock()
        self._watches: set[Callable[[health_pb2.HealthCheckResponse | None], None]] = set()

    def Watch(self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext,
              send_response_callback: Callable | None = None) -> Any:
        if send_response_callback is None:  # a server without non-blocking streams: nothing to end early
            return super().Watch(request, context)
        ended = threading.Event()

        def send(response: health_pb2.HealthCheckResponse | None) -> None:
            """Pass responses on; ``None`` ends the stream (once; the base class sends it again when
            the call closes)."""
            with self._watch_lock:
                if ended.is_set():
                    return
                if response is None:
                    ended.set()
                    self._watches.discard(send)
            send_response_callback(response)

        with self._watch_lock:
            self._watches.add(send)
        return super().Watch(request, context, send)

    def end_watches(self) -> None:
        """End every open ``Watch`` stream with status OK (after its last status update)."""
        with self._watch_lock:
            watches = list(self._watches)
        for send in watches:
            send(None)


class DrainInterceptor(grpc.ServerInterceptor):
    """While ``draining`` is set, calls to methods under ``prefix`` end with UNAVAILABLE; an open
    client-streaming call ends with it at its next message."""

    def __init__(self, prefix: str, draining: threading.Event) -> None:
        self._prefix, self._draining = prefix, draining

    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
                          details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None or not details.method.startswith(self._prefix):
            return handler
        if self._draining.is_set():
            return refusal(handler, grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(
                self._until_draining(handler.stream_stream), request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        return handler

    def _until_draining(self, behavior: Callable) -> Callable:
        draining = self._draining

        def wrapped(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
            def until_draining() -> Iterator[Any]:
                for request in requests:
                    if draining.is_set():
                        context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
                    yield request

            return behavior(until_draining(), context)

        return wrapped


class IdleWatch:
    """Cancels a stream's call once it has had no frame in flight for ``seconds``: no reply owed and
    no new frame. A client that waits for its replies (lock-step) is never idle while one is owed.

    Wrap the request iterator with ``frames``, call ``replied`` after each reply and ``close`` at the
    end; one watcher thread per stream.
    """

    def __init__(self, context: grpc.ServicerContext, seconds: float) -> None:
        self._context, self.seconds = context, seconds
        self._lock = threading.Lock()
        self._in_flight, self._since = 0, time.monotonic()
        self._closed = threading.Event()
        threading.Thread(target=self._watch, name="styletrain-idle-watch", daemon=True).start()

    def frames(self, frames: Iterator[T]) -> Iterator[T]:
        for frame in frames:
            with self._lock:
                self._in_flight += 1
            yield frame

    def replied(self) -> None:
        with self._lock:
            self._in_flight -= 1
            self._since = time.monotonic()

    def close(self) -> None:
        self._closed.set()

    def _watch(self) -> None:
        wait = self.seconds
        while not self._closed.wait(wait):
            with self._lock:
                idle = time.monotonic() - self._since if self._in_flight == 0 else 0.0
            if idle >= self.seconds:
                log.info("a stream had no frame for %g s: cancelled", self.seconds)
                self._context.cancel()
                return
            wait = self.seconds - idle
