"""Prometheus metrics: a real server with ``metrics_port=0``, real calls, then a scrape of ``/metrics``."""

from __future__ import annotations

import io
import queue
import urllib.request
import logging
import socket
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from serving.client import make_request
from serving.config import add_arguments, config_from_args
from serving.metrics import ServerMetrics, host_of
from styletrain.errors import UserError
from styletrain.v1 import styletrain_pb2 as pb

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def photo(width: int = 40, height: int = 24) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_scrape_counts_calls_images_rejections_and_timings(start_server: Callable[..., Any]) -> None:
    live = start_server(metrics_port=0, max_streams=1)
    port = live.server.metrics.port
    assert port and port != live.port
    image, size = photo(), 40 * 24

    ok = live.client.stylize(image, blend={"candy": 0.7, "udnie": 0.3})
    assert ok.model == "multi"
    with pytest.raises(grpc.RpcError) as invalid:
        live.client.stylize(image, blend={"candy": -1.0, "udnie": 1.0})  # bad weights
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    live.client.list_styles()

    # One stream held open: a good frame, a bad one, then a second stream is refused while it is open.
    frames: queue.Queue[tuple[int, pb.StylizeRequest] | None] = queue.Queue()
    responses = live.client.stream(iter(frames.get, None))
    frames.put((1, make_request(image, style="mosaic", model="multi")))
    assert next(responses).HasField("response")
    frames.put((2, make_request(image, blend={"candy": 0.0}, model="multi")))
    assert next(responses).error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    with pytest.raises(grpc.RpcError) as busy:
        list(live.client.stream(iter([(1, make_request(image, style="mosaic"))])))
    assert busy.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    during = scrape(port)
    frames.put((3, make_request(image, style="udnie")))
    frames.put(None)
    assert [r.frame_id for r in responses] == [3]
    after = scrape(port)

    assert value(during, "styletrain_rpcs_in_flight", method="StylizeStream") == 1
    assert value(after, "styletrain_rpcs_in_flight", method="StylizeStream") == 0
    assert value(after, "styletrain_rpcs_in_flight", method="Stylize") == 0
    rpcs = {("Stylize", "OK"): 1, ("Stylize", "INVALID_ARGUMENT"): 1, ("ListStyles", "OK"): 1,
            ("StylizeStream", "OK"): 1, ("StylizeStream", "RESOURCE_EXHAUSTED"): 1}
    for (method, code), count in rpcs.items():
        assert value(after, "styletrain_rpcs_total", method=method, code=code) == count, (method, code)
    requests = {("Stylize", "multi", "OK"): 1, ("Stylize", "", "INVALID_ARGUMENT"): 1,
                ("StylizeStream", "multi", "OK"): 2, ("StylizeStream", "multi", "INVALID_ARGUMENT"): 1}
    for (method, model, code), count in requests.items():
        assert value(after, "styletrain_requests_total", method=method, model=model, code=code) == count
    assert sum(v for (name, _), v in after.items() if name == "styletrain_requests_total") == 5
    rejections = {("Stylize", "invalid"): 1, ("StylizeStream", "invalid"): 1, ("StylizeStream", "busy"): 1}
    for (method, reason), count in rejections.items():
        assert value(after, "styletrain_rejections_total", method=method, reason=reason) == count
    assert sum(v for (name, _), v in after.items() if name == "styletrain_rejections_total") == 3

    assert value(after, "styletrain_request_seconds_count", method="Stylize", model="multi") == 1
    assert value(after, "styletrain_request_seconds_count", method="StylizeStream", model="multi") == 2
    assert value(after, "styletrain_inference_seconds_count", model="multi") == 3
    assert value(after, "styletrain_request_seconds_sum", method="Stylize", model="multi") == pytest.approx(
        ok.total_ms / 1000, rel=1e-3)
    assert value(after, "styletrain_queue_seconds_count", model="multi") == 3
    assert value(after, "styletrain_batch_size_count", model="multi") == 3
    assert value(after, "styletrain_batch_size_bucket", model="multi", le="1.0") == 3
    assert value(after, "styletrain_pixels_total", model="multi") == 3 * size


def test_a_windowed_stream_that_served_frames_is_no_rejection_when_it_ends(start_server: Callable[..., Any]) -> None:
    """With a stream window, frames run on pool threads; the call must still know it served images, or
    a served stream that shutdown ends with UNAVAILABLE counts as a refused call."""
    live = start_server(metrics_port=0, stream_window=4, max_concurrent=4)
    frames: queue.Queue[tuple[int, pb.StylizeRequest] | None] = queue.Queue()
    responses = live.client.stream(iter(frames.get, None))
    for frame_id in (1, 2):
        frames.put((frame_id, make_request(photo(), style="mosaic", model="multi")))
    assert [next(responses).frame_id for _ in range(2)] == [1, 2]
    live.server.drain(delay=60)
    frames.put((3, make_request(photo(), style="mosaic", model="multi")))
    with pytest.raises(grpc.RpcError) as ended:
        next(responses)
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    frames.put(None)
    after = scrape(live.server.metrics.port)
    assert value(after, "styletrain_rpcs_total", method="StylizeStream", code="UNAVAILABLE") == 1
    assert value(after, "styletrain_requests_total", method="StylizeStream", model="multi", code="OK") == 2
    assert value(after, "styletrain_rejections_total", method="StylizeStream", reason="unavailable") == 0


def test_every_server_has_its_own_registry_and_no_endpoint_by_default(start_server: Callable[..., Any]) -> None:
    first, second = start_server(), start_server()
    assert first.server.metrics.port is None and first.server.metrics.registry is not second.server.metrics.registry
    first.client.stylize(photo(), style="mosaic", model="mosaic")
    count = lambda live: live.server.metrics.registry.get_sample_value(  # noqa: E731
        "styletrain_requests_total", {"method": "Stylize", "model": "mosaic", "code": "OK"})
    assert count(first) == 1 and count(second) is None


def test_metrics_port_option_and_host() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert config_from_args(parser.parse_args([]))[1].metrics_port is None
    address, config = config_from_args(parser.parse_args(["--host", "127.0.0.1", "--metrics-port", "9464"]))
    assert config.metrics_port == 9464 and host_of(address) == "127.0.0.1"
    assert host_of("[::]:50051") == "::" and host_of("localhost:0") == "localhost"


def test_a_metrics_port_in_use_is_a_user_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UserError, match=rf"cannot serve metrics on 127.0.0.1:{port}: "):
            ServerMetrics(host="127.0.0.1", port=port).start()


@pytest.mark.parametrize("host, warned", [("127.0.0.1", False), ("0.0.0.0", True)])
def test_metrics_reachable_from_other_hosts_are_a_warning(host: str, warned: bool,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """The endpoint has neither the gRPC port's token nor its TLS."""
    metrics = ServerMetrics(host=host, port=0)
    with caplog.at_level(logging.WARNING, logger="serving.metrics"):
        metrics.start()
    metrics.stop()
    assert ("plain HTTP with no authentication" in caplog.text) == warned
