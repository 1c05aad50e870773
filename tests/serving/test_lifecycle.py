"""Issue 9.8: shutting down the way load balancers expect (``serving.lifecycle``).

Draining: health answers NOT_SERVING while new style calls get UNAVAILABLE and calls in flight
finish; stopping: open health watches end at once instead of holding an idle server for the grace.
"""

from __future__ import annotations

import io
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from serving.client import make_request
from styletrain.v1 import styletrain_pb2 as pb

Live = Any  # tests/serving/conftest.py's Live
LONG_DRAIN = 60.0
"""A drain delay no test waits out: each ends the drain with ``stop``."""


def png(width: int = 32, height: int = 32) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def slow_down(live: Live, seconds: float, entered: threading.Event) -> None:
    for stylizer in live.server.registry.models.values():
        def slow_run(*args: object, _run: Callable = stylizer.run, **kwargs: object) -> np.ndarray:
            entered.set()
            time.sleep(seconds)
            return _run(*args, **kwargs)
        stylizer.run = slow_run  # type: ignore[method-assign]


def test_draining_answers_not_serving_refuses_new_calls_and_finishes_calls_in_flight(
        start_server: Callable[..., Live]) -> None:
    live = start_server(drain_delay=LONG_DRAIN)
    entered = threading.Event()
    slow_down(live, 1.0, entered)
    in_flight = live.client.stub.Stylize.future(make_request(png(), style="candy"), timeout=20)
    assert entered.wait(5)
    closed = live.server.drain()
    # the listener stays open: a health check over the network answers NOT_SERVING, not UNAVAILABLE
    assert live.client.health() == "NOT_SERVING"
    assert live.client.health("styletrain.v1.StyleTransferService") == "NOT_SERVING"
    for call in (lambda: live.client.stylize(png(), style="candy"), live.client.list_styles):
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert info.value.details().startswith("server is shutting down")
    assert in_flight.result().width == 32
    assert not closed.is_set()
    assert live.server.stop(grace=5).wait(10)


def test_an_open_stream_ends_with_unavailable_at_its_next_frame_once_draining(
        start_server: Callable[..., Live]) -> None:
    live = start_server(drain_delay=LONG_DRAIN)
    frames: queue.Queue[pb.StylizeStreamRequest | None] = queue.Queue()

    def requests() -> Iterator[pb.StylizeStreamRequest]:
        while (frame := frames.get(timeout=20)) is not None:
            yield frame

    stream = live.client.stub.StylizeStream(requests(), timeout=20)
    frames.put(pb.StylizeStreamRequest(frame_id=1, request=make_request(png(), style="candy")))
    assert next(stream).frame_id == 1
    live.server.drain()
    frames.put(pb.StylizeStreamRequest(frame_id=2, request=make_request(png(), style="candy")))
    with pytest.raises(grpc.RpcError) as info:
        next(stream)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    frames.put(None)
    assert live.server.stop(grace=5).wait(10)


def test_an_open_health_watch_does_not_hold_an_idle_server_for_the_grace(start_server: Callable[..., Live]) -> None:
    """Load balancers keep a Watch open; stopping must not wait the grace period for it."""
    live = start_server()
    watch = health_pb2_grpc.HealthStub(live.client.channel).Watch(health_pb2.HealthCheckRequest(service=""),
                                                                 timeout=60)
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    grace = 10.0
    closed = live.server.stop(grace=grace)
    assert closed.wait(grace / 2), "an open Watch held the server for the grace period"
    assert [r.status for r in watch] == [health_pb2.HealthCheckResponse.NOT_SERVING]  # then it ended with OK


def test_drain_delay_zero_stops_at_once(start_server: Callable[..., Live]) -> None:
    live = start_server(drain_delay=0.0)
    assert live.server.drain().wait(10)
