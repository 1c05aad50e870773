"""A small client for the style-transfer server, used by ``styletrain client`` and the tests."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType

from grpc_health.v1 import health_pb2, health_pb2_grpc

from serving.security import channel
from styletrain.v1 import styletrain_pb2 as pb
from styletrain.v1 import styletrain_pb2_grpc as pb_grpc

DEFAULT_MAX_MESSAGE_BYTES = 32 * 1024 * 1024
FORMATS = {"jpg": pb.IMAGE_FORMAT_JPEG, "jpeg": pb.IMAGE_FORMAT_JPEG, "png": pb.IMAGE_FORMAT_PNG,
           "webp": pb.IMAGE_FORMAT_WEBP}


def make_request(image: bytes, *, style: str | None = None, blend: Mapping[str, float] | None = None,
                 model: str | None = None, output_format: str | None = None, quality: int | None = None,
                 max_side: int | None = None, strength: float | None = None,
                 preserve_color: bool = False) -> pb.StylizeRequest:
    """A ``StylizeRequest``; ``output_format`` is ``"jpeg"``, ``"png"`` or ``"webp"`` (None: JPEG);
    ``strength`` 0..1 (None: full style)."""
    if output_format is not None and output_format.lower() not in FORMATS:
        raise ValueError(f"output format must be one of {sorted(FORMATS)}; got {output_format!r}")
    options = pb.OutputOptions(format=FORMATS[output_format.lower()] if output_format else 0,
                               quality=quality or 0, max_side=max_side or 0)
    if style and blend:
        raise ValueError("give a style or a blend, not both")
    request = pb.StylizeRequest(image=image, model=model or "", options=options, preserve_color=preserve_color)
    if strength is not None:
        request.strength = strength
    if style:
        request.style = style
    elif blend:
        request.style_blend.weights.update(blend)
    return request


class StyleClient:
    """A channel to one server. ``timeout`` (seconds) is the default deadline of every single call.

    TLS when ``tls`` or ``tls_ca`` is given (``tls_ca``: the CA that signed the server's certificate;
    without it, the system's roots), with ``tls_cert``/``tls_key`` as the client certificate for
    servers that require one; ``token`` is sent as ``authorization: Bearer`` metadata on every call.
    """

    def __init__(self, address: str, *, timeout: float | None = 60.0,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, tls: bool = False,
                 tls_ca: str | Path | None = None, tls_cert: str | Path | None = None,
                 tls_key: str | Path | None = None, token: str | None = None) -> None:
        self.address, self.timeout = address, timeout
        self.channel = channel(address, options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ], tls=tls, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key, token=token)
        self.stub = pb_grpc.StyleTransferServiceStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)

    def list_styles(self, *, timeout: float | None = None) -> list[pb.Model]:
        """The server's models (``.name``, ``.styles``, ``.providers``)."""
        return list(self.stub.ListStyles(pb.ListStylesRequest(), timeout=timeout or self.timeout).models)

    def stylize(self, image: bytes, *, timeout: float | None = None, **request: object) -> pb.StylizeResponse:
        """Stylize encoded image bytes; keyword arguments as in ``make_request``."""
        return self.stub.Stylize(make_request(image, **request), timeout=timeout or self.timeout)

    def stream(self, frames: Iterable[tuple[int, pb.StylizeRequest]], *,
               timeout: float | None = None) -> Iterator[pb.StylizeStreamResponse]:
        """Stylize (frame id, request) pairs; yields one ``StylizeStreamResponse`` per frame, in order.

        ``timeout`` bounds the whole stream; None (the default) sets no deadline: the client's default
        is for single calls, and a video can take longer than any of them."""
        requests = (pb.StylizeStreamRequest(frame_id=frame_id, request=request) for frame_id, request in frames)
        return self.stub.StylizeStream(requests, timeout=timeout)

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The server's health status name, e.g. ``"SERVING"``."""
        response = self.health_stub.Check(health_pb2.HealthCheckRequest(service=service),
                                          timeout=timeout or self.timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> StyleClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
