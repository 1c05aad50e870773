"""``styletrain demo``: the page's behaviour against a real server, and the page itself in Chromium."""

from __future__ import annotations

import shutil
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from serving.client import StyleClient, make_request
from serving.demo import Demo, DemoError, VideoStream, blend_of, shares, shares_text
from styletrain.cli import main
from styletrain.errors import UserError

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
CHROMEDRIVER = shutil.which("chromedriver")
needs_chromium = pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                                    reason="needs Chromium and its driver (apt-get install chromium chromium-driver)")


def photo(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    return Image.fromarray(pixels).resize((width, height), Image.Resampling.BILINEAR)


def count(live: Any, name: str, **labels: str) -> float:
    return live.server.metrics.registry.get_sample_value(name, labels) or 0.0


# -- the page's behaviour, without a browser -----------------------------------------------------


def test_weights_are_checked_and_normalised_like_the_server() -> None:
    styles = ["candy", "mosaic", "udnie"]
    with pytest.raises(DemoError, match="All style weights are 0: move at least one slider above 0"):
        blend_of(styles, [0, 0.0, None])
    blend = blend_of(styles, [0.6, 0, 0.2])
    assert shares(styles, blend) == pytest.approx({"candy": 0.75, "mosaic": 0.0, "udnie": 0.25})
    assert shares_text(shares(styles, blend)) == "candy 75% · udnie 25%"
    with pytest.raises(DemoError, match="non-negative"):
        shares(styles, {"candy": -1.0, "udnie": 2.0})


def test_photos_are_stylized_and_problems_are_messages(start_server: Callable[..., Any]) -> None:
    live = start_server()
    demo = Demo(live.client)
    assert demo.models == {"mosaic": ["mosaic"], "multi": ["candy", "mosaic", "udnie"]}
    assert demo.default_model == "multi"

    image, text = demo.stylize(photo(), "multi", [1.0, 0.0, 0.5], max_side=512)
    assert image is not None and image.size == (64, 48)
    assert text.startswith("candy 67% · udnie 33%") and "**multi** on onnxruntime (cpu), 64×48 px" in text
    assert "batch of 1" in text and count(live, "styletrain_requests_total", method="Stylize", model="multi",
                                          code="OK") == 1
    smaller, _ = demo.stylize(photo(), "multi", [1.0, 0.0, 0.5], max_side=32)
    assert smaller is not None and smaller.size == (32, 24)

    assert demo.stylize(photo(), "multi", [0, 0, 0]) == (None, "⚠️ All style weights are 0: move at least one "
                                                                 "slider above 0.")
    assert demo.stylize(None, "multi", [1, 0, 0]) == (None, "⚠️ Upload a photo, or take one with the webcam.")
    image, text = demo.stylize(photo(12, 12), "mosaic", [1.0])
    assert image is None and text.startswith("⚠️ The server answered INVALID_ARGUMENT: ") and "16" in text
    assert "Traceback" not in text


def test_video_frames_share_one_stream_which_reopens_after_it_ended(start_server: Callable[..., Any]) -> None:
    live = start_server()
    demo = Demo(live.client)
    image, text, stream = demo.video_frame(photo(), "multi", [0, 1, 0], 512, None)
    assert image is not None and "mosaic 100%" in text and isinstance(stream, VideoStream)
    image, text, same = demo.video_frame(photo(seed=1), "multi", [0, 1, 0], 512, stream)
    assert image is not None and same is stream

    image, text, same = demo.video_frame(photo(12, 12), "multi", [0, 1, 0], 512, stream)
    assert image is None and text.startswith("⚠️ The server answered INVALID_ARGUMENT") and same is stream
    assert not stream.closed  # a bad frame does not end the stream

    stream._responses.cancel()  # the call ends under the page (deadline, server restart): the next frame reopens
    image, text, reopened = demo.video_frame(photo(), "mosaic", [1.0], 512, stream)
    assert image is not None and "**mosaic**" in text and reopened is not stream and stream.closed
    reopened.close()

    assert count(live, "styletrain_requests_total", method="StylizeStream", model="multi", code="OK") == 2
    assert count(live, "styletrain_requests_total", method="StylizeStream", model="mosaic", code="OK") == 1
    assert count(live, "styletrain_requests_total", method="Stylize", model="multi", code="OK") == 0


def test_a_stream_the_server_ended_releases_its_request_thread_on_close() -> None:
    """gRPC reads the frames in a thread of its own; left waiting, one leaked per ended video call."""
    class EndedCall:
        def stream(self, frames: Iterator[Any], timeout: float) -> Iterator[Any]:
            self.reader = threading.Thread(target=lambda: list(frames), daemon=True)
            self.reader.start()
            return iter(())  # the server ended the call without an answer

    call = EndedCall()
    stream = VideoStream(call)  # type: ignore[arg-type]
    with pytest.raises(DemoError, match="the server ended the video stream"):
        stream.stylize(make_request(b"frame", style="mosaic"))
    assert stream.closed  # the page drops it for a new stream without closing it
    call.reader.join(5)
    assert not call.reader.is_alive()


def test_an_unreachable_server_is_one_line() -> None:
    with StyleClient("127.0.0.1:1", timeout=5) as client:
        with pytest.raises(UserError, match=r"cannot list the styles of 127.0.0.1:1: The server answered "
                                            r"UNAVAILABLE: .* Is `styletrain serve` running at 127.0.0.1:1\?"):
            Demo(client)


def test_demo_command_without_gradio_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio raises ImportError
    assert main(["demo", "--server", "127.0.0.1:1"]) == 2
    assert capsys.readouterr().err.strip() == \
        "styletrain demo: error: the demo needs Gradio: pip install -e '.[demo]' in the styletrain checkout"


# -- the page in a real browser --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium with a fake webcam (a moving test pattern) that needs no permission prompt."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install 'styletrain[dev]')")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000",
                 "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def demo_page(start_server: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real server on the tiny models and the demo page for it; the page's URL."""
    pytest.importorskip("gradio", reason="needs the demo extra (pip install -e '.[demo]')")
    from serving.demo import launch

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))  # uploads and results: gone after the test
    live = start_server(max_pixels=1_000_000)  # webcam frames reach the server at 512 px (the page's default)
    port = free_port()
    app, client = launch(live.address, host="127.0.0.1", port=port, block=False)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        app.close(verbose=False)
        client.close()


@needs_chromium
@pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")  # pandas deprecations inside Gradio
def test_page_in_chromium_upload_slide_switch_model_and_webcam_video(demo_page: str, browser: Any,
                                                                      tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 30)
    by_css = lambda css: browser.find_elements(By.CSS_SELECTOR, css)  # noqa: E731

    def result_source(previous: str | None = None, css: str = "#result img") -> str:
        """Wait until the result image is there and differs from ``previous``; its URL."""
        def changed(_: Any) -> str | None:
            sources = [e.get_attribute("src") for e in by_css(css)]
            return next((s for s in sources if s and s != previous), None)
        return wait.until(changed)

    def status(element_id: str = "status") -> str:
        return browser.find_element(By.ID, element_id).text

    def set_slider(element_id: str, value: float) -> None:
        slider = browser.find_element(By.CSS_SELECTOR, f"#{element_id} input[type=range]")
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].value = arguments[1];"
                               "arguments[0].dispatchEvent(new Event('input', {bubbles: true}));", slider, value)

    path = tmp_path / "photo.png"
    photo(160, 120).save(path)
    browser.get(demo_page)
    wait.until(lambda _: by_css("#photo input[type=file]"))[0].send_keys(str(path))
    first = result_source()
    wait.until(lambda _: "**" not in status() and "on onnxruntime" in status())
    assert status().startswith("candy 100%") and "multi on onnxruntime (cpu), 160×120 px" in status()
    assert "inference" in status() and "round trip" in status()

    set_slider("weight-multi-udnie", 0.5)  # a blend: a new image, and the normalised weights
    second = result_source(first)
    wait.until(lambda _: status().startswith("candy 67% · udnie 33%"))

    by_css("#model input[value=mosaic]")[0].click()  # another model: its own slider, a new image
    shown = lambda css: any(e.is_displayed() for e in by_css(css))  # noqa: E731
    wait.until(lambda _: shown("#weight-mosaic-mosaic") and not shown("#weight-multi-candy"))
    third = result_source(second)
    wait.until(lambda _: "mosaic on onnxruntime" in status())

    set_slider("weight-mosaic-mosaic", 0)  # all weights 0: a message, not a request
    wait.until(lambda _: "All style weights are 0" in status())
    assert third

    # Video: the fake webcam's frames through one StylizeStream call.
    next(b for b in by_css("button[role=tab]") if "Video" in b.text).click()
    set_slider("weight-mosaic-mosaic", 1)
    wait.until(lambda _: by_css("#camera div[title='grant webcam access'] button"))[0].click()
    wait.until(lambda _: by_css("#camera button[aria-label='capture photo']"))[0].click()
    frame = result_source(css="#video img")
    result_source(frame, css="#video img")  # a second frame
    wait.until(lambda _: "mosaic on onnxruntime" in status("video-status"))
