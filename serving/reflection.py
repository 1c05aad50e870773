"""Server reflection under both names clients use: ``grpc.reflection.v1`` (grpcurl, Postman and
current tools) and ``grpc.reflection.v1alpha`` (older ones).

grpcio-reflection ships only v1alpha. The v1 protocol has the same messages with the same field
numbers, so the v1 method is served by the v1alpha servicer with the v1alpha message classes; the v1
file descriptor (the v1alpha one renamed) is added to the pool so v1 can describe itself too.

A reflection stream holds a server thread for as long as the client keeps it open, so at most
``MAX_STREAMS`` are open at once (more get RESOURCE_EXHAUSTED): idle ones must not take the threads
health checks answer on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2

V1ALPHA_SERVICE_NAME = reflection.SERVICE_NAME
V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"
MAX_STREAMS = 2
"""Reflection streams open at once, v1 and v1alpha together (grpcurl opens one per command)."""


def enable_reflection(server: grpc.Server, service_names: Iterable[str]) -> None:
    """Serve reflection (v1 and v1alpha) listing ``service_names`` and both reflection services."""
    _add_v1_descriptor(descriptor_pool.Default())
    servicer = reflection.ReflectionServicer((*service_names, V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME))
    handler = grpc.stream_stream_rpc_method_handler(
        _limited(servicer.ServerReflectionInfo, MAX_STREAMS),
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString)
    server.add_generic_rpc_handlers(tuple(
        grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": handler})
        for name in (V1ALPHA_SERVICE_NAME, V1_SERVICE_NAME)))


def _limited(behavior: Callable[..., Iterator[Any]], max_streams: int) -> Callable[..., Iterator[Any]]:
    """``behavior`` with at most ``max_streams`` calls open at once; more end with RESOURCE_EXHAUSTED."""
    open_streams = threading.BoundedSemaphore(max_streams)

    def limited(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        if not open_streams.acquire(blocking=False):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"{max_streams} reflection streams are open, the most this server allows; "
                          "close one and retry")
        if not context.add_callback(open_streams.release):  # released when the call ends, however
            open_streams.release()
        return behavior(requests, context)

    return limited


def _add_v1_descriptor(pool: descriptor_pool.DescriptorPool) -> None:
    """Add ``grpc/reflection/v1/reflection.proto`` (v1alpha's messages, renamed) unless the pool has it."""
    try:
        pool.FindServiceByName(V1_SERVICE_NAME)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    old, new = ".grpc.reflection.v1alpha.", ".grpc.reflection.v1."
    proto.name, proto.package = "grpc/reflection/v1/reflection.proto", "grpc.reflection.v1"
    proto.ClearField("options")
    for message in proto.message_type:
        for field in message.field:
            if field.type_name.startswith(old):
                field.type_name = new + field.type_name[len(old):]
    for method in proto.service[0].method:
        method.input_type, method.output_type = (method.input_type.replace(old, new),
                                                 method.output_type.replace(old, new))
    pool.Add(proto)
