"""``styletrain demo``: a browser page over a running server's gRPC API, to see style blending.

``Demo`` is what the page does, without Gradio: the server's models (``ListStyles``), the slider
values turned into a blend and normalised the way the server does (``styletrain.styles``), one
``Stylize`` call per photo, one ``StylizeStream`` call per browser tab for webcam video
(``VideoStream``), and every failure as a one-line message for the page. ``build_app`` lays it out
with Gradio, imported only there (``pip install -e '.[demo]'`` in the checkout).
"""

from __future__ import annotations

import io
import itertools
import logging
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
from PIL import Image

from serving.client import StyleClient, make_request
from styletrain.errors import UserError
from styletrain.styles import IDENTITY, style_weights
from styletrain.v1 import styletrain_pb2 as pb

__all__ = ["INSTALL_HINT", "Demo", "DemoError", "VideoStream", "build_app", "import_gradio", "launch"]

log = logging.getLogger(__name__)

INSTALL_HINT = "the demo needs Gradio: pip install -e '.[demo]' in the styletrain checkout"
DEFAULT_MAX_SIDE = 512
IDENTITY_INFO = "no style: raise it to weaken the others (style strength)"
VIDEO_CALL_SECONDS = 60.0
"""Deadline of one ``StylizeStream`` call; a longer video opens the next call on its own. It bounds
how long a tab closed mid-video holds one of the server's stream slots (Gradio keeps a closed tab's
state for an hour, so its ``delete_callback`` comes too late for that)."""
VIDEO_IDLE_SECONDS = 10
"""An open tab's stream is closed this long after its last frame (Gradio's ``State`` time-to-live)."""
VIDEO_MAX_SECONDS = 600
"""Gradio stops a tab's webcam stream after this long; pressing Record again goes on."""


class DemoError(Exception):
    """A problem the page shows as a message: no photo, all weights 0, an error from the server."""


def blend_of(styles: Sequence[str], values: Sequence[float | None]) -> dict[str, float]:
    """The slider values as ``{style: weight}``; ``DemoError`` when none is above 0."""
    blend = {style: float(value or 0.0) for style, value in zip(styles, values, strict=True)}
    if not any(weight > 0 for weight in blend.values()):
        raise DemoError("All style weights are 0: move at least one slider above 0.")
    return blend


def shares(styles: Sequence[str], blend: dict[str, float]) -> dict[str, float]:
    """The blend normalised to sum 1, by the function the server uses."""
    try:
        weights = style_weights(styles, blend=blend)
    except UserError as exc:
        raise DemoError(str(exc)) from None
    return {style: float(w) for style, w in zip(styles, weights)}


def shares_text(normalised: dict[str, float]) -> str:
    """``"candy 70% · udnie 30%"``: the styles with a share, largest first."""
    ranked = sorted(((w, s) for s, w in normalised.items() if w > 0), key=lambda item: (-item[0], item[1]))
    return " · ".join(f"{style} {weight:.0%}" for weight, style in ranked)


def describe(response: pb.StylizeResponse, round_trip_ms: float) -> str:
    """The timings and the model and backend that served a response, as one Markdown line."""
    return (f"**{response.model}** on {response.backend or '?'} ({response.device or '?'}), "
            f"{response.width}×{response.height} px · inference {response.inference_ms:.0f} ms · "
            f"queue {response.queue_ms:.0f} ms · server total {response.total_ms:.0f} ms · "
            f"batch of {response.batch_size or 1} · round trip {round_trip_ms:.0f} ms")


def rpc_error_text(exc: grpc.RpcError, address: str) -> str:
    """A failed call as one readable line: the status code, the server's message and a hint."""
    code = exc.code() if callable(getattr(exc, "code", None)) else None
    details = exc.details() if callable(getattr(exc, "details", None)) else str(exc)
    name = code.name if code is not None else "error"
    hint = f" Is `styletrain serve` running at {address}?" if code == grpc.StatusCode.UNAVAILABLE else ""
    return f"The server answered {name}: {details}.{hint}"


def encode_photo(photo: Image.Image, max_side: int | None = None) -> bytes:
    """The page's photo as JPEG bytes for the request (quality 95: the model sees little loss),
    shrunk first so its longer side is at most ``max_side``: a 1920x1080 webcam frame need not
    travel at full size when the server would shrink it anyway."""
    photo = photo.convert("RGB")
    if max_side and max(photo.size) > max_side:
        photo.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


class VideoStream:
    """One browser tab's ``StylizeStream`` call: ``stylize`` sends a frame and waits for its result.

    The server answers frames in order, one response each, so one frame at a time (a lock) keeps
    every response paired with its frame. ``close`` ends the call.
    """

    def __init__(self, client: StyleClient, *, timeout: float = VIDEO_CALL_SECONDS) -> None:
        self._frames: queue.Queue[tuple[int, pb.StylizeRequest] | None] = queue.Queue()
        self._responses: Iterator[pb.StylizeStreamResponse] = client.stream(iter(self._frames.get, None),
                                                                              timeout=timeout)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.closed = False  # the call is over (closed here, or ended by the server)
        self._released = False  # gRPC's request thread has been told there are no more frames

    def stylize(self, request: pb.StylizeRequest) -> pb.StylizeResponse:
        """Stylize one frame; ``DemoError`` for a frame the server refused, ``grpc.RpcError`` if the call ended."""
        with self._lock:
            frame_id = next(self._ids)
            self._frames.put((frame_id, request))
            try:
                reply = next(self._responses)
            except StopIteration:
                self.close()  # the page opens a new stream for the next frame and drops this one
                raise DemoError("the server ended the video stream") from None
            except grpc.RpcError:
                self.close()
                raise
        if reply.HasField("error"):
            code = grpc.StatusCode.UNKNOWN
            for c in grpc.StatusCode:
                if c.value[0] == reply.error.code:
                    code = c
            raise DemoError(f"The server answered {code.name}: {reply.error.message}.")
        return reply.response

    def close(self) -> None:
        """End the call, and release gRPC's request thread, which waits for the next frame until told
        there is none, also when the server has already ended the call."""
        self.closed = True
        if not self._released:
            self._released = True
            self._frames.put(None)
            cancel = getattr(self._responses, "cancel", None)
            if cancel is not None:
                cancel()


class Demo:
    """The page's behaviour: the server's models, and photos or video frames stylized by slider weights."""

    def __init__(self, client: StyleClient) -> None:
        self.client = client
        try:
            listed = client.list_styles()
        except grpc.RpcError as exc:
            raise UserError(f"cannot list the styles of {client.address}: "
                            f"{rpc_error_text(exc, client.address)}") from None
        self.models: dict[str, list[str]] = {m.name: list(m.styles) for m in listed}
        if not self.models:
            raise UserError(f"the server at {client.address} holds no models")

    @property
    def default_model(self) -> str:
        """The model the page opens with: the one with the most styles (blending is the point)."""
        return min(self.models, key=lambda name: (-len(self.models[name]), name))

    def request(self, photo: Image.Image | None, model: str, values: Sequence[float | None],
                max_side: float | None) -> tuple[pb.StylizeRequest, str]:
        """The request for a photo and the sliders, and the normalised weights as text."""
        if photo is None:
            raise DemoError("Upload a photo, or take one with the webcam.")
        if model not in self.models:
            raise DemoError(f"Pick a model: {', '.join(self.models)}.")
        styles = self.models[model]
        blend = blend_of(styles, values)
        text = shares_text(shares(styles, blend))
        side = int(max_side) if max_side else None
        return make_request(encode_photo(photo, side), blend=blend, model=model, output_format="jpeg",
                            max_side=side), text

    def stylize(self, photo: Image.Image | None, model: str, values: Sequence[float | None],
                max_side: float | None = DEFAULT_MAX_SIDE) -> tuple[Image.Image | None, str]:
        """(stylized photo or None, Markdown for the page); never raises for bad input or server errors."""
        try:
            request, weights = self.request(photo, model, values, max_side)
            start = time.perf_counter()
            try:
                response = self.client.stub.Stylize(request, timeout=self.client.timeout)
            except grpc.RpcError as exc:
                raise DemoError(rpc_error_text(exc, self.client.address)) from None
            round_trip = (time.perf_counter() - start) * 1000
        except DemoError as exc:
            return None, f"⚠️ {exc}"
        return Image.open(io.BytesIO(response.image)), f"{weights}  \n{describe(response, round_trip)}"

    def video_frame(self, frame: Image.Image | None, model: str, values: Sequence[float | None],
                    max_side: float | None, stream: VideoStream | None
                    ) -> tuple[Image.Image | None, str, VideoStream | None]:
        """One webcam frame through the tab's ``StylizeStream`` call (opened on the first frame, and
        again after the call ended, e.g. at its deadline): (image, Markdown, the tab's stream)."""
        try:
            request, weights = self.request(frame, model, values, max_side)
            for attempt in range(2):
                if stream is None or stream.closed:
                    stream = VideoStream(self.client)
                start = time.perf_counter()
                try:
                    response = stream.stylize(request)
                    break
                except grpc.RpcError as exc:
                    stream.close()
                    if attempt or exc.code() not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
                        raise DemoError(rpc_error_text(exc, self.client.address)) from None
            round_trip = (time.perf_counter() - start) * 1000
        except DemoError as exc:
            return None, f"⚠️ {exc}", stream
        return Image.open(io.BytesIO(response.image)), f"{weights}  \n{describe(response, round_trip)}", stream


def import_gradio() -> Any:
    """Gradio, or ``UserError`` saying how to install it."""
    try:
        import gradio
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return gradio


def _close_stream(stream: VideoStream | None) -> None:
    if stream is not None:
        stream.close()


def build_app(demo: Demo) -> Any:
    """The Gradio page: photo in, model, one weight slider per style, result with timings; a video tab."""
    gr = import_gradio()
    sliders: list[Any] = []
    offsets: dict[str, slice] = {}
    groups: dict[str, Any] = {}
    with gr.Blocks(title="styletrain demo", analytics_enabled=False) as app:
        gr.Markdown(f"## styletrain: style blending\nServer `{demo.client.address}`. Pick a model, move the "
                    "sliders: weights are normalised to sum 1, as the server does.")
        with gr.Row():
            with gr.Column(scale=1, min_width=260):
                model = gr.Radio(list(demo.models), value=demo.default_model, label="Model", elem_id="model")
                for name, styles in demo.models.items():
                    with gr.Column(visible=name == demo.default_model) as groups[name]:
                        start = len(sliders)
                        for i, style in enumerate(styles):
                            sliders.append(gr.Slider(0, 1, value=1.0 if i == 0 else 0.0, step=0.05, label=style,
                                                     info=IDENTITY_INFO if style == IDENTITY else None,
                                                     elem_id=f"weight-{name}-{style}"))
                        offsets[name] = slice(start, len(sliders))
                max_side = gr.Slider(64, 2048, value=DEFAULT_MAX_SIDE, step=32, label="Longest side (px)",
                                     info="the server shrinks the photo to this first", elem_id="max-side")
            with gr.Column(scale=3):
                with gr.Tab("Photo"):
                    with gr.Row():
                        photo = gr.Image(sources=["upload", "webcam"], type="pil", label="Photo", elem_id="photo")
                        result = gr.Image(label="Stylized", interactive=False, format="jpeg", elem_id="result",
                                          buttons=["download", "fullscreen"])
                    status = gr.Markdown("Upload a photo, or take one with the webcam.", elem_id="status")
                with gr.Tab("Video (webcam)"):
                    with gr.Row():
                        camera = gr.Image(sources=["webcam"], streaming=True, type="pil", label="Webcam",
                                          elem_id="camera")
                        video = gr.Image(label="Stylized video", interactive=False, format="jpeg",
                                         elem_id="video", buttons=["fullscreen"])
                    video_status = gr.Markdown("Start the webcam: frames go through one StylizeStream call.",
                                               elem_id="video-status")
                    stream = gr.State(None, time_to_live=VIDEO_IDLE_SECONDS, delete_callback=_close_stream)

        def picked(name: str, values: Sequence[float]) -> Sequence[float]:
            return values[offsets[name]] if name in offsets else ()

        def on_photo(image: Image.Image | None, name: str, side: float, *values: float) -> tuple[Any, str]:
            return demo.stylize(image, name, picked(name, values), side)

        def on_frame(image: Image.Image | None, name: str, side: float, current: VideoStream | None,
                     *values: float) -> tuple[Any, str, VideoStream | None]:
            return demo.video_frame(image, name, picked(name, values), side, current)

        def on_model(name: str) -> list[Any]:
            return [gr.update(visible=n == name) for n in groups]

        run = dict(fn=on_photo, inputs=[photo, model, max_side, *sliders], outputs=[result, status],
                   show_progress="minimal")
        photo.change(**run)
        model.change(on_model, inputs=model, outputs=list(groups.values())).then(**run)
        for control in (*sliders, max_side):
            control.change(**run)
        camera.stream(on_frame, inputs=[camera, model, max_side, stream, *sliders],
                      outputs=[video, video_status, stream], stream_every=0.2, time_limit=VIDEO_MAX_SECONDS)
    return app


def theme() -> Any:
    """Gradio's default look with system fonts: the page loads nothing from the internet."""
    gr = import_gradio()
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "monospace"])


def launch(server: str, *, host: str = "127.0.0.1", port: int = 7860, timeout: float = 60.0,
           block: bool = True) -> tuple[Any, StyleClient]:
    """Serve the page on ``host:port`` for the gRPC server at ``server``; blocks until Ctrl-C unless
    ``block=False`` (then close the returned app and client yourself)."""
    import_gradio()
    client = StyleClient(server, timeout=timeout)
    try:
        app = build_app(Demo(client))
        app.queue().launch(server_name=host, server_port=port, prevent_thread_lock=not block, quiet=not block,
                           theme=theme(), show_error=False)
    except OSError as exc:
        client.close()
        raise UserError(f"cannot serve the demo page on {host}:{port}: {exc}") from None
    except BaseException:
        client.close()
        raise
    if block:
        client.close()
    return app, client
