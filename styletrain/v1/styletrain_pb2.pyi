from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ImageFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_FORMAT_UNSPECIFIED: _ClassVar[ImageFormat]
    IMAGE_FORMAT_JPEG: _ClassVar[ImageFormat]
    IMAGE_FORMAT_PNG: _ClassVar[ImageFormat]
    IMAGE_FORMAT_WEBP: _ClassVar[ImageFormat]

class StrengthMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STRENGTH_METHOD_UNSPECIFIED: _ClassVar[StrengthMethod]
    STRENGTH_METHOD_IDENTITY: _ClassVar[StrengthMethod]
    STRENGTH_METHOD_PIXEL_BLEND: _ClassVar[StrengthMethod]
IMAGE_FORMAT_UNSPECIFIED: ImageFormat
IMAGE_FORMAT_JPEG: ImageFormat
IMAGE_FORMAT_PNG: ImageFormat
IMAGE_FORMAT_WEBP: ImageFormat
STRENGTH_METHOD_UNSPECIFIED: StrengthMethod
STRENGTH_METHOD_IDENTITY: StrengthMethod
STRENGTH_METHOD_PIXEL_BLEND: StrengthMethod

class ListStylesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Model(_message.Message):
    __slots__ = ("name", "styles", "providers", "backend", "device")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STYLES_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    name: str
    styles: _containers.RepeatedScalarFieldContainer[str]
    providers: _containers.RepeatedScalarFieldContainer[str]
    backend: str
    device: str
    def __init__(self, name: _Optional[str] = ..., styles: _Optional[_Iterable[str]] = ..., providers: _Optional[_Iterable[str]] = ..., backend: _Optional[str] = ..., device: _Optional[str] = ...) -> None: ...

class ListStylesResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ...) -> None: ...

class OutputOptions(_message.Message):
    __slots__ = ("format", "quality", "max_side")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    MAX_SIDE_FIELD_NUMBER: _ClassVar[int]
    format: ImageFormat
    quality: int
    max_side: int
    def __init__(self, format: _Optional[_Union[ImageFormat, str]] = ..., quality: _Optional[int] = ..., max_side: _Optional[int] = ...) -> None: ...

class StyleBlend(_message.Message):
    __slots__ = ("weights",)
    class WeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    weights: _containers.ScalarMap[str, float]
    def __init__(self, weights: _Optional[_Mapping[str, float]] = ...) -> None: ...

class StylizeRequest(_message.Message):
    __slots__ = ("image", "style", "style_blend", "model", "options", "strength", "preserve_color")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    STYLE_FIELD_NUMBER: _ClassVar[int]
    STYLE_BLEND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    STRENGTH_FIELD_NUMBER: _ClassVar[int]
    PRESERVE_COLOR_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    style: str
    style_blend: StyleBlend
    model: str
    options: OutputOptions
    strength: float
    preserve_color: bool
    def __init__(self, image: _Optional[bytes] = ..., style: _Optional[str] = ..., style_blend: _Optional[_Union[StyleBlend, _Mapping]] = ..., model: _Optional[str] = ..., options: _Optional[_Union[OutputOptions, _Mapping]] = ..., strength: _Optional[float] = ..., preserve_color: _Optional[bool] = ...) -> None: ...

class StylizeResponse(_message.Message):
    __slots__ = ("image", "width", "height", "format", "model", "inference_ms", "total_ms", "backend", "device", "strength_method", "queue_ms", "batch_size")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    STRENGTH_METHOD_FIELD_NUMBER: _ClassVar[int]
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    width: int
    height: int
    format: ImageFormat
    model: str
    inference_ms: float
    total_ms: float
    backend: str
    device: str
    strength_method: StrengthMethod
    queue_ms: float
    batch_size: int
    def __init__(self, image: _Optional[bytes] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., format: _Optional[_Union[ImageFormat, str]] = ..., model: _Optional[str] = ..., inference_ms: _Optional[float] = ..., total_ms: _Optional[float] = ..., backend: _Optional[str] = ..., device: _Optional[str] = ..., strength_method: _Optional[_Union[StrengthMethod, str]] = ..., queue_ms: _Optional[float] = ..., batch_size: _Optional[int] = ...) -> None: ...

class StylizeStreamRequest(_message.Message):
    __slots__ = ("frame_id", "request")
    FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    frame_id: int
    request: StylizeRequest
    def __init__(self, frame_id: _Optional[int] = ..., request: _Optional[_Union[StylizeRequest, _Mapping]] = ...) -> None: ...

class StylizeStreamResponse(_message.Message):
    __slots__ = ("frame_id", "response", "error")
    FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    frame_id: int
    response: StylizeResponse
    error: _status_pb2.Status
    def __init__(self, frame_id: _Optional[int] = ..., response: _Optional[_Union[StylizeResponse, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...
