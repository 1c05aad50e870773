"""Render docs/demo.png: `styletrain demo` in headless Chromium on the shipped models and a demo photo.

    python scripts/render_demo_screenshot.py [--photo ../shared/data/content/chicago.jpg] [--output docs/demo.png]

Needs the demo extra (Gradio), selenium, and Debian's chromium + chromium-driver. Starts a gRPC
server on checkpoints/ and the demo page on free localhost ports, uploads the photo, sets a blend
with the sliders, and saves a palette PNG (kept under 500 KB).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import socket
import tempfile
from pathlib import Path

from PIL import Image
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from serving.config import ServerConfig
from serving.demo import launch
from serving.server import create_server

ROOT = Path(__file__).resolve().parents[1]
BLEND = {"candy": 0.6, "feathers": 0.4}
"""Slider values for the shot on multistyle (the others stay at 0), both sliders in view."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", type=Path, default=ROOT.parent / "shared" / "data" / "content" / "chicago.jpg")
    parser.add_argument("--models", type=Path, default=ROOT / "checkpoints")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "demo.png")
    args = parser.parse_args()

    server, port = create_server("127.0.0.1:0", args.models, config=ServerConfig(threads=2))
    server.start()
    page_port = free_port()
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,760",
                 "--hide-scrollbars"):
        options.add_argument(flag)
    with tempfile.TemporaryDirectory() as cache:
        os.environ["GRADIO_TEMP_DIR"] = cache
        app, client = launch(f"127.0.0.1:{port}", host="127.0.0.1", port=page_port, block=False)
        driver = webdriver.Chrome(service=webdriver.ChromeService(shutil.which("chromedriver")), options=options)
        try:
            wait = WebDriverWait(driver, 120)
            driver.get(f"http://127.0.0.1:{page_port}")
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#photo input[type=file]"))[0].send_keys(
                str(args.photo.resolve()))
            for style, value in BLEND.items():
                slider = driver.find_element(By.CSS_SELECTOR, f"#weight-multistyle-{style} input[type=range]")
                driver.execute_script("arguments[0].value = arguments[1];"
                                      "arguments[0].dispatchEvent(new Event('input', {bubbles: true}));",
                                      slider, value)
            wanted = " · ".join(f"{style} {weight / sum(BLEND.values()):.0%}" for style, weight in BLEND.items())
            wait.until(lambda d: d.find_element(By.ID, "status").text.startswith(wanted))
            driver.execute_script("window.scrollTo(0, 0)")
            shot = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
        finally:
            driver.quit()
            app.close(verbose=False)
            client.close()
            server.stop(0).wait(10)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    shot.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(args.output,
                                                                                             optimize=True)
    print(f"wrote {args.output} ({shot.width}x{shot.height}, {args.output.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
