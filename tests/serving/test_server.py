"""The gRPC server end to end: real server on a free port, real clients, tiny exported models."""

from __future__ import annotations

import io
import logging
import queue
import re
import struct
import threading
import time
import zlib
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from google.protobuf.descriptor_pb2 import FileDescriptorProto
from google.rpc import error_details_pb2
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from PIL import Image

from support import code_of
from serving import reflection
from serving.client import StyleClient, make_request
from serving.pipeline import MAX_MESSAGE_CHARS, Failure
from serving.server import (SERVICE_NAME, ServerConfig, StyleServer, StyleTransferServicer, _frame_status,
                            create_server)
from styletrain.errors import UserError
from styletrain.images import open_image
from styletrain.runtime import load_stylizer
from styletrain.v1 import styletrain_pb2 as pb

Live = Any  # tests/serving/conftest.py's Live: a started server, its port and a client


def encode(width: int, height: int, *, seed: int = 0, fmt: str = "PNG", **options: Any) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A small valid PNG whose header claims ``width`` x ``height`` (a decompression bomb's header)."""
    data = encode(16, 16)
    ihdr = b"IHDR" + struct.pack(">II", width, height) + data[24:29]
    return data[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + data[33:]


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def slow_down(server: StyleServer, seconds: float, entered: threading.Event | None = None) -> None:
    """Make every model's inference take ``seconds`` longer (after warm-up), flagging ``entered``."""
    for stylizer in server.registry.models.values():
        def slow_run(*args: object, _run: Callable = stylizer.run, **kwargs: object) -> np.ndarray:
            if entered is not None:
                entered.set()
            time.sleep(seconds)
            return _run(*args, **kwargs)
        stylizer.run = slow_run  # type: ignore[method-assign]



# ---------------------------------------------------------------------------------------------


def test_lists_models_and_styles(live: Live) -> None:
    models = {m.name: list(m.styles) for m in live.client.list_styles()}
    assert models == {"mosaic": ["mosaic"], "multi": ["candy", "mosaic", "udnie"]}
    assert all("CPUExecutionProvider" in m.providers for m in live.client.list_styles())


def test_health_and_reflection(live: Live) -> None:
    assert live.client.health() == "SERVING"
    assert live.client.health(SERVICE_NAME) == "SERVING"
    database = ProtoReflectionDescriptorDatabase(live.client.channel)
    services = set(database.get_services())
    assert {SERVICE_NAME, "grpc.health.v1.Health"} <= services
    assert database.FindFileContainingSymbol(SERVICE_NAME).name == "styletrain/v1/styletrain.proto"


def test_reflection_v1_is_served_as_well_as_v1alpha(live: Live) -> None:
    """grpcio-reflection ships only v1alpha; current tools (grpcurl, Postman) ask grpc.reflection.v1."""
    info = live.client.channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
    requests = [reflection_pb2.ServerReflectionRequest(list_services=""),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol="grpc.reflection.v1.ServerReflection"),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE_NAME)]
    listed, v1_file, ours = list(info(iter(requests), timeout=10))
    assert {s.name for s in listed.list_services_response.service} == {
        SERVICE_NAME, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection"}
    names = [FileDescriptorProto.FromString(f).name for f in v1_file.file_descriptor_response.file_descriptor_proto]
    assert names == ["grpc/reflection/v1/reflection.proto"]
    names = [FileDescriptorProto.FromString(f).name for f in ours.file_descriptor_response.file_descriptor_proto]
    assert "styletrain/v1/styletrain.proto" in names


def test_idle_reflection_streams_are_capped_and_health_still_answers(live: Live) -> None:
    """Each open reflection stream holds a server thread: past the cap they are refused, so idle ones
    cannot take the threads health checks and ListStyles answer on."""
    info = live.client.channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
    never = threading.Event()

    def idle() -> Any:  # one request, then the stream stays open and idle
        yield reflection_pb2.ServerReflectionRequest(list_services="")
        never.wait()

    try:
        held = [info(idle(), timeout=60) for _ in range(reflection.MAX_STREAMS)]
        assert all(next(stream).list_services_response.service for stream in held)  # open on the server
        extra = [code_of(lambda: next(info(idle(), timeout=10))) for _ in range(8)]
        assert extra == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 8
        assert live.client.health() == "SERVING"
        assert {m.name for m in live.client.list_styles()} == {"mosaic", "multi"}
        for stream in held:
            stream.cancel()
        deadline = time.monotonic() + 5
        while code_of(lambda: next(info(idle(), timeout=2))) != grpc.StatusCode.OK:
            assert time.monotonic() < deadline, "closed streams never gave their places back"
            time.sleep(0.05)
    finally:
        never.set()


def test_output_is_the_input_size_and_equals_in_process_onnx(live: Live, onnx_models: dict[str, Path]) -> None:
    image = encode(53, 37)
    response = live.client.stylize(image, style="udnie", output_format="png")
    assert (response.width, response.height, response.model) == (53, 37, "multi")
    assert response.format == pb.IMAGE_FORMAT_PNG and response.total_ms >= response.inference_ms > 0
    out = decode(response.image)
    assert out.shape == (37, 53, 3)
    expected = load_stylizer(onnx_models["multi"])(open_image(image), np.array([0, 0, 1], dtype=np.float32))
    np.testing.assert_array_equal(out, np.asarray(expected))


def test_output_formats_and_max_side(live: Live) -> None:
    for fmt, magic in (("jpeg", b"\xff\xd8"), ("webp", b"RIFF"), (None, b"\xff\xd8")):
        response = live.client.stylize(encode(40, 30, fmt="JPEG"), style="candy", output_format=fmt, quality=80)
        assert response.image.startswith(magic)
    response = live.client.stylize(encode(80, 40), style="candy", max_side=40, output_format="png")
    assert (response.width, response.height) == (40, 20) and decode(response.image).shape == (20, 40, 3)


def test_blends(live: Live) -> None:
    image = encode(48, 32, seed=3)

    def run(**choice: object) -> np.ndarray:
        return decode(live.client.stylize(image, output_format="png", **choice).image).astype(int)

    candy, udnie = run(style="candy"), run(style="udnie")
    mix = run(blend={"candy": 0.5, "udnie": 0.5})
    assert np.abs(mix - candy).mean() > 1 and np.abs(mix - udnie).mean() > 1
    np.testing.assert_array_equal(run(blend={"candy": 1.0, "udnie": 0.0}), candy)
    np.testing.assert_array_equal(run(blend={"candy": 3.0, "udnie": 3.0}), mix)  # normalised to sum 1


def test_strength_and_preserve_color(live: Live) -> None:
    image = encode(48, 32, seed=4)
    photo = decode(image).astype(int)

    def run(**options: object) -> tuple[np.ndarray, pb.StylizeResponse]:
        response = live.client.stylize(image, style="candy", output_format="png", **options)
        return decode(response.image).astype(int), response

    full, response = run()
    assert response.strength_method == pb.STRENGTH_METHOD_UNSPECIFIED
    none, response = run(strength=0.0)  # the test models have no identity row: a pixel blend
    assert response.strength_method == pb.STRENGTH_METHOD_PIXEL_BLEND and np.abs(none - photo).max() <= 1
    half, _ = run(strength=0.5)
    assert np.abs(half - (full + photo) / 2).max() <= 1.5
    kept, _ = run(preserve_color=True)
    assert np.abs(kept - full).mean() > 1
    with pytest.raises(grpc.RpcError) as info:
        live.client.stylize(image, style="candy", strength=1.5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "strength must be between" in info.value.details()


def test_model_selection(live: Live) -> None:
    image = encode(32, 32)
    assert live.client.stylize(image, style="mosaic").model == "mosaic"  # the dedicated net is preferred
    assert live.client.stylize(image, style="mosaic", model="multi").model == "multi"
    assert live.client.stylize(image, style="candy").model == "multi"  # the only model holding candy
    assert live.client.stylize(image, model="mosaic").model == "mosaic"  # its only style
    assert live.client.stylize(image).model == "mosaic"  # no choice: the only single-style model


def test_stream_of_20_frames_arrives_complete_and_in_order(live: Live) -> None:
    sizes = [(32 + 3 * i, 48 - i) for i in range(20)]
    frames = [(1000 + i, make_request(encode(w, h, seed=i), blend={"candy": i, "mosaic": 20 - i},
                                      output_format="png")) for i, (w, h) in enumerate(sizes)]
    responses = list(live.client.stream(iter(frames)))
    assert [r.frame_id for r in responses] == [1000 + i for i in range(20)]
    for response, (w, h) in zip(responses, sizes):
        assert response.WhichOneof("result") == "response"
        assert decode(response.response.image).shape == (h, w, 3)


def test_a_stream_outlives_the_clients_single_call_timeout(start_server: Callable[..., Live]) -> None:
    # the client's default deadline is for single calls: a video stream used to die with it
    live = start_server()
    frames = ((i, make_request(encode(32, 32, seed=i), style="candy")) for i in range(3))
    with StyleClient(live.address, timeout=0.5) as client:
        def slow_frames() -> Any:
            for frame in frames:
                time.sleep(0.3)
                yield frame
        assert [r.frame_id for r in client.stream(slow_frames())] == [0, 1, 2]


def test_stream_reports_bad_frames_and_goes_on(live: Live) -> None:
    frames = [(1, make_request(encode(32, 32), style="candy")),
              (2, make_request(b"not an image", style="candy")),
              (3, make_request(encode(32, 32), style="nope")),
              (4, make_request(encode(32, 32), style="udnie"))]
    responses = list(live.client.stream(iter(frames)))
    assert [r.frame_id for r in responses] == [1, 2, 3, 4]
    assert [r.WhichOneof("result") for r in responses] == ["response", "error", "error", "response"]
    assert responses[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "not a readable" in responses[1].error.message
    assert responses[2].error.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert "unknown style 'nope'" in responses[2].error.message


def test_an_idle_stream_is_cancelled_and_gives_its_place_back(start_server: Callable[..., Live]) -> None:
    live = start_server(max_streams=1, stream_idle_timeout=0.5)
    sent = threading.Event()

    def frames() -> Any:  # one frame, then the client goes quiet (a closed browser tab)
        yield 1, make_request(encode(32, 32), style="candy")
        sent.wait()

    try:
        responses = live.client.stream(frames(), timeout=30)
        assert next(responses).frame_id == 1
        start = time.monotonic()
        with pytest.raises(grpc.RpcError) as ended:
            next(responses)
        assert ended.value.code() == grpc.StatusCode.CANCELLED and time.monotonic() - start < 10
        deadline = time.monotonic() + 5  # its place is free again
        while code_of(lambda: list(live.client.stream(iter([(2, make_request(encode(32, 32), style="candy"))])))) \
                != grpc.StatusCode.OK:
            assert time.monotonic() < deadline, "the cancelled stream never gave its place back"
            time.sleep(0.05)
    finally:
        sent.set()


def test_a_lock_step_stream_is_not_idle_while_its_frame_runs(start_server: Callable[..., Live]) -> None:
    """With a stream window the server reads ahead; a client waiting for a slow reply is not idle."""
    live = start_server(stream_window=2, stream_idle_timeout=0.5)
    for stylizer in live.server.registry.models.values():
        def slow(*args: Any, _run: Callable = stylizer.run, **kwargs: Any) -> Any:
            time.sleep(1.5)  # three idle timeouts
            return _run(*args, **kwargs)
        stylizer.run = slow  # type: ignore[method-assign]
    frames: queue.Queue[tuple[int, pb.StylizeRequest] | None] = queue.Queue()
    responses = live.client.stream(iter(frames.get, None), timeout=30)
    for frame_id in (1, 2):  # lock-step: the next frame only after the reply
        frames.put((frame_id, make_request(encode(32, 32), style="candy")))
        assert next(responses).frame_id == frame_id
    frames.put(None)
    assert list(responses) == []


OVERSIZE = object()  # stands for an image one byte over the server's message limit


@pytest.mark.parametrize(("request_kwargs", "code", "match"), [
    ({"image": b"hello", "style": "candy"}, "INVALID_ARGUMENT", "not a readable JPEG/PNG/WEBP"),
    ({"image": encode(32, 32)[:300], "style": "candy"}, "INVALID_ARGUMENT", "could not be decoded"),
    ({"image": encode(32, 32, fmt="GIF"), "style": "candy"}, "INVALID_ARGUMENT", "not a readable JPEG/PNG/WEBP"),
    ({"image": encode(40, 12), "style": "candy"}, "INVALID_ARGUMENT", "both sides must be at least 16 px"),
    ({"image": encode(300, 256), "style": "candy"}, "INVALID_ARGUMENT", "76800 pixels, above the limit of 65536"),
    # refused from the header alone: ours (max_pixels), then Pillow's bomb warning made an error
    ({"image": png_claiming(3000, 3000), "style": "candy"}, "INVALID_ARGUMENT", "9000000 pixels, above the limit"),
    ({"image": png_claiming(10_000, 10_000), "style": "candy"}, "INVALID_ARGUMENT", "decompression bomb"),
    ({"style": "nope"}, "NOT_FOUND", "^unknown style 'nope'; available: mosaic: mosaic; multi: candy, mosaic, udnie$"),
    ({"style": "nope", "model": "multi"}, "NOT_FOUND", "unknown style 'nope'"),
    ({"blend": {"candy": 1.0, "nope": 1.0}}, "NOT_FOUND", "unknown style 'nope'"),
    ({"blend": {"candy": 1.0, "nope": 1.0, "x": 1.0}, "model": "multi"}, "NOT_FOUND", "unknown styles 'nope', 'x'"),
    ({"style": "candy", "model": "mosaic"}, "INVALID_ARGUMENT",
     r"^model 'mosaic' has no style 'candy' \(styles: mosaic\); 'candy' is in model 'multi'$"),
    ({"blend": {"candy": 1.0, "udnie": 1.0}, "model": "mosaic"}, "INVALID_ARGUMENT",
     r"^model 'mosaic' has no styles 'candy', 'udnie' \(styles: mosaic\); all are in model 'multi'$"),
    ({"blend": {f"s{i}": 1.0 for i in range(65)}}, "INVALID_ARGUMENT", "^a blend names at most 64 styles; got 65$"),
    ({"blend": {"candy": -0.5, "udnie": 1.0}}, "INVALID_ARGUMENT", "must be finite, non-negative"),
    ({"blend": {"candy": float("nan"), "udnie": 1.0}}, "INVALID_ARGUMENT", "must be finite, non-negative"),
    ({"blend": {"candy": float("inf"), "udnie": 1.0}}, "INVALID_ARGUMENT", "must be finite, non-negative"),
    ({"blend": {"candy": 0.0, "udnie": 0.0}}, "INVALID_ARGUMENT", "sum to more than 0"),
    ({"model": "multi"}, "INVALID_ARGUMENT", "this model holds 3 styles; choose one"),
    ({"model": "nope", "style": "candy"}, "NOT_FOUND", "unknown model 'nope'"),
    ({"style": "candy", "quality": 101}, "INVALID_ARGUMENT", "quality must be 1-100"),
    ({"style": "candy", "max_side": 8}, "INVALID_ARGUMENT", "max_side must be at least 16"),
    ({"image": encode(1600, 16), "style": "candy", "max_side": 100}, "INVALID_ARGUMENT",
     "^max_side 100 shrinks the 1600x16 image to 100x1, but both sides must be at least 16 px; "
     "use a max_side of at least 1600, or leave it unset \\(0 over gRPC\\) to keep the size$"),
    ({"image": OVERSIZE, "style": "candy"}, "RESOURCE_EXHAUSTED", "larger than max"),
])
def test_bad_requests_get_their_status_code(live: Live, request_kwargs: dict, code: str, match: str) -> None:
    kwargs = {"image": encode(32, 32), **request_kwargs}
    if kwargs["image"] is OVERSIZE:
        kwargs["image"] = b"\0" * (live.server.config.max_message_bytes + 1)
    with pytest.raises(grpc.RpcError) as info:
        live.client.stylize(**kwargs)
    assert info.value.code() == getattr(grpc.StatusCode, code)
    assert re.search(match, info.value.details()), info.value.details()
    assert live.client.health() == "SERVING"


def test_an_output_too_wide_for_its_format_is_refused_before_the_run(start_server, monkeypatch, caplog) -> None:
    """16x16400 fits the pixel limit, but WebP holds at most 16383 px a side: the client's error, found
    before the inference, not an INTERNAL error from the encoder after it."""
    from serving import pipeline

    live = start_server(max_pixels=300_000)
    for ran in ("run", "run_batched"):
        monkeypatch.setattr(pipeline, ran, lambda *a, **kw: pytest.fail("the model ran"))
    flat = io.BytesIO()
    Image.new("RGB", (16400, 16), (90, 120, 150)).save(flat, format="PNG")
    with caplog.at_level(logging.ERROR), pytest.raises(grpc.RpcError) as info:
        live.client.stylize(flat.getvalue(), style="candy", output_format="webp")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == ("the stylized image would be 16400x16, but WEBP holds at most 16383 px a side; "
                                    "ask for PNG or a smaller max_side")
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]  # not the server's error


def test_max_side_below_the_minimum_side_is_the_clients_error(live: Live, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 9.4: 1600x16 shrunk to max_side 100 would be 100x1: INVALID_ARGUMENT, and nothing logged as an error."""
    with caplog.at_level(logging.WARNING):
        with pytest.raises(grpc.RpcError) as info:
            live.client.stylize(encode(1600, 16), style="candy", max_side=100)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "both sides must be at least 16 px" in info.value.details()
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_inference_errors_do_not_leak_runtime_internals(start_server: Callable[..., Live],
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """Issue 9.4: the runtime's message (node names, shapes) goes to the log, the client gets a short one."""
    live = start_server()

    def fail(*args: object, **kwargs: object) -> np.ndarray:
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while "
                           "running Conv node. Name:'/encoder/conv1/Conv' Status Message: shape {1,3,1,100}")

    for stylizer in live.server.registry.models.values():
        stylizer.run = fail  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="serving"):
        with pytest.raises(grpc.RpcError) as info:
            live.client.stylize(encode(32, 32), style="candy")
    assert info.value.code() == grpc.StatusCode.INTERNAL
    details = info.value.details()
    error_id = re.fullmatch(r"inference failed on model multi \(error id (\w+) in the server log\)", details)
    assert error_id, details
    logged = [r for r in caplog.records if error_id.group(1) in r.getMessage()]
    assert logged and "/encoder/conv1/Conv" in logged[0].exc_text


def test_unexpected_errors_outside_inference_do_not_leak_either(start_server: Callable[..., Live],
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """A bug anywhere in a request (here the encoder) is INTERNAL with an error id, in a call and in a
    stream frame, instead of gRPC's "Exception calling application: <the exception's text>"."""
    live = start_server()

    def broken_encode(*args: object) -> bytes:
        raise OSError("/srv/secret/path/libwebp.so: cannot open shared object file")

    monkeypatch.setattr("serving.pipeline.encode_image", broken_encode)
    with caplog.at_level(logging.ERROR, logger="serving"):
        with pytest.raises(grpc.RpcError) as info:
            live.client.stylize(encode(32, 32), style="candy")
        [frame] = live.client.stream(iter([(7, make_request(encode(32, 32), style="candy"))]))
    assert info.value.code() == grpc.StatusCode.INTERNAL
    for details in (info.value.details(), frame.error.message):
        assert re.fullmatch(r"request failed \(error id \w+ in the server log\)", details), details
    assert frame.error.code == grpc.StatusCode.INTERNAL.value[0]
    assert sum("libwebp.so" in (r.exc_text or "") for r in caplog.records) == 2


def test_each_stream_frame_runs_the_model_once(start_server: Callable[..., Live]) -> None:
    runs: list[tuple[int, ...]] = []

    def count_runs(server: StyleServer) -> None:
        for stylizer in server.registry.models.values():
            def counted(pixels: np.ndarray, *args: object, _run: Callable = stylizer.run_pixels,
                        **kwargs: object) -> np.ndarray:
                runs.append(pixels.shape)
                return _run(pixels, *args, **kwargs)
            stylizer.run_pixels = counted  # type: ignore[method-assign]

    live = start_server(before_start=count_runs)
    runs.clear()  # warm-up runs
    frames = [(i, make_request(encode(32 + i, 32), style="candy")) for i in range(5)]
    assert len(list(live.client.stream(iter(frames)))) == 5
    assert sorted(runs) == [(32, 32 + i, 3) for i in range(5)]


def test_blend_errors_are_short_whatever_the_client_sends(live: Live) -> None:
    """Issue 9.5: long unknown names are echoed cut and counted, and the number of entries is capped,
    so the message never outgrows gRPC's trailer limit (which the client would see as RESOURCE_EXHAUSTED)."""
    blend = {f"style_{i}_" + "x" * 300: 1.0 for i in range(60)}
    with pytest.raises(grpc.RpcError) as info:
        live.client.stylize(encode(32, 32), blend=blend)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert len(info.value.details()) <= 500 and "... and 55 more" in info.value.details()
    assert "x" * 41 not in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        live.client.stylize(encode(32, 32), blend={f"unknown_{i}": 1.0 for i in range(1000)})
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "a blend names at most 64 styles; got 1000"
    responses = list(live.client.stream(iter([(7, make_request(encode(32, 32), blend=blend))])))
    assert responses[0].error.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert len(responses[0].error.message) <= 500


def test_every_failure_message_is_bounded() -> None:
    assert len(Failure(grpc.StatusCode.INVALID_ARGUMENT, "x" * 100_000).message) == MAX_MESSAGE_CHARS


def test_client_message_limit_applies_to_replies(live: Live) -> None:
    small = encode(240, 240, fmt="JPEG", quality=1)  # noise at JPEG quality 1: a few kB; as a PNG reply, 100+ kB
    with StyleClient(live.address, max_message_bytes=20_000) as client:
        assert len(small) < 10_000
        with pytest.raises(grpc.RpcError) as info:
            client.stylize(small, style="candy", output_format="png")
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "received message larger than max" in info.value.details().lower()


def test_a_reply_over_the_servers_message_limit_is_the_clients_error(start_server: Callable[..., Live]) -> None:
    # gRPC itself would fail the send with RESOURCE_EXHAUSTED, which this server means as "busy, retry",
    # and on a stream it would end the whole call
    live = start_server(max_message_bytes=100_000)
    small = encode(240, 240, fmt="JPEG", quality=1)
    with pytest.raises(grpc.RpcError) as info:
        live.client.stylize(small, style="candy", output_format="png")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "more than this server's message limit of 0.1 MiB; ask for JPEG" in info.value.details()
    frames = [(1, make_request(small, style="candy", output_format="png")), (2, make_request(small, style="candy"))]
    responses = list(live.client.stream(iter(frames)))
    assert [r.WhichOneof("result") for r in responses] == ["error", "response"]
    assert responses[0].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]


def test_a_stream_frame_told_to_retry_carries_the_delay() -> None:
    status = _frame_status(Failure(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy", retry_after_ms=250))
    info = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info)
    assert info.retry_delay.ToMilliseconds() == 250
    assert not _frame_status(Failure(grpc.StatusCode.NOT_FOUND, "no such style")).details


def test_parallel_clients_succeed_or_are_told_to_back_off(start_server: Callable[..., Live]) -> None:
    live = start_server(max_concurrent=2)
    image = encode(96, 64)

    def client_run(seed: int) -> list[grpc.StatusCode]:
        with StyleClient(live.address, timeout=30) as client:
            return [code_of(lambda: client.stylize(image, style=("candy", "udnie")[seed % 2])) for _ in range(10)]

    with futures.ThreadPoolExecutor(8) as pool:
        results = [f.result(timeout=60) for f in [pool.submit(client_run, i) for i in range(8)]]
    codes = [c for r in results for c in r]
    assert len(codes) == 80
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert grpc.StatusCode.OK in codes
    assert live.client.health() == "SERVING"


def test_health_answers_while_inference_is_saturated(start_server: Callable[..., Live]) -> None:
    live = start_server(max_concurrent=2)
    slow_down(live.server, 1.0)
    with futures.ThreadPoolExecutor(6) as pool:
        calls = [pool.submit(code_of, lambda: live.client.stylize(encode(32, 32), style="candy")) for _ in range(6)]
        time.sleep(0.3)  # two calls are inside inference now, the rest were refused
        for _ in range(5):
            assert live.client.health(timeout=1.0) == "SERVING"  # a 1 s deadline: fails if it cannot answer
            assert len(live.client.list_styles(timeout=1.0)) == 2
        codes = [c.result(timeout=30) for c in calls]
    assert codes.count(grpc.StatusCode.OK) == 2
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 4


def test_deadline_exceeded_and_server_carries_on(start_server: Callable[..., Live]) -> None:
    live = start_server(max_concurrent=1)
    slow_down(live.server, 0.6)
    assert code_of(lambda: live.client.stylize(encode(32, 32), style="candy", timeout=0.2)) == \
        grpc.StatusCode.DEADLINE_EXCEEDED
    time.sleep(0.6)  # the slow run ends and frees its slot
    assert live.client.stylize(encode(32, 32), style="candy").width == 32


class _ExpiredContext:
    """A servicer context whose deadline has passed."""

    def time_remaining(self) -> float:
        return -0.5

    def is_active(self) -> bool:
        return True

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return True

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise RuntimeError(code, details)


def test_expired_requests_are_not_run(onnx_models: dict[str, Path]) -> None:
    from serving.models import ModelRegistry

    registry = ModelRegistry.from_folder(onnx_models["dir"])
    runs = []
    for stylizer in registry.models.values():
        stylizer.run = lambda *a, **k: runs.append(1)  # type: ignore[method-assign]
    servicer = StyleTransferServicer(registry, ServerConfig())
    request = make_request(encode(32, 32), style="candy")
    with pytest.raises(RuntimeError, match="deadline passed before the request ran"):
        servicer.Stylize(request, _ExpiredContext())
    assert runs == []


def test_cancelled_clients_do_not_hurt(start_server: Callable[..., Live]) -> None:
    live = start_server(max_concurrent=1)
    entered = threading.Event()
    slow_down(live.server, 0.5, entered)
    call = live.client.stub.Stylize.future(make_request(encode(32, 32), style="candy"), timeout=10)
    assert entered.wait(5)
    call.cancel()
    stream = live.client.stream(iter([(1, make_request(encode(32, 32), style="candy"))] * 3))
    stream.cancel()
    deadline = time.monotonic() + 5
    while code_of(lambda: live.client.stylize(encode(32, 32), style="candy")) != grpc.StatusCode.OK:
        assert time.monotonic() < deadline, "the cancelled call never freed its slot"
        time.sleep(0.1)
    assert live.client.health() == "SERVING"


def test_non_finite_output_is_an_error(start_server: Callable[..., Live]) -> None:
    live = start_server()
    for stylizer in live.server.registry.models.values():
        stylizer.run = lambda images, *a, **k: np.full_like(images, np.nan)  # type: ignore[method-assign]
    with pytest.raises(grpc.RpcError) as info:
        live.client.stylize(encode(32, 32), style="candy")
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "non-finite" in info.value.details()


def test_health_is_not_serving_until_warmed_up(onnx_models: dict[str, Path]) -> None:
    """The port answers during warm-up (load balancers can probe it) but says NOT_SERVING until it is done."""
    server, port = create_server("127.0.0.1:0", onnx_models["dir"], config=ServerConfig(threads=1))
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    health = health_pb2_grpc.HealthStub(channel)
    seen = []

    def check() -> None:
        seen.append([health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
                     for name in ("", SERVICE_NAME)])

    warm_up = server.registry.warm_up

    def watched_warm_up(*args: Any, **kwargs: Any) -> None:
        check()
        warm_up(*args, **kwargs)

    server.registry.warm_up = watched_warm_up  # type: ignore[method-assign]
    try:
        server.start()
        check()
    finally:
        channel.close()
        assert server.stop(0).wait(10)
    status = health_pb2.HealthCheckResponse
    assert seen == [[status.NOT_SERVING] * 2, [status.SERVING] * 2]


def test_shutdown_finishes_the_call_in_flight(start_server: Callable[..., Live]) -> None:
    live = start_server()
    entered = threading.Event()
    slow_down(live.server, 1.0, entered)
    call = live.client.stub.Stylize.future(make_request(encode(32, 32), style="candy"), timeout=20)
    assert entered.wait(5)
    done = live.server.stop(grace=10)
    status = live.server.health.Check(health_pb2.HealthCheckRequest(service=""), None).status
    assert status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert call.result().width == 32  # the in-flight call completed
    assert code_of(lambda: live.client.stylize(encode(32, 32), style="candy", timeout=2)) == \
        grpc.StatusCode.UNAVAILABLE  # new calls are refused
    assert done.wait(10)


def test_no_models_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"no \.onnx models in .*styletrain export"):
        create_server("127.0.0.1:0", tmp_path)
    with pytest.raises(UserError, match="models folder not found"):
        create_server("127.0.0.1:0", tmp_path / "missing")
