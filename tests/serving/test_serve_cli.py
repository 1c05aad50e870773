"""``styletrain serve`` as a process (SIGTERM drains and exits) and the ``styletrain client`` commands."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from serving.client import StyleClient
from styletrain.cli import main


def test_serve_then_client_commands_then_sigterm(onnx_models: dict[str, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "styletrain", "serve", "--models", str(onnx_models["dir"]),
             "--port", "0", "--threads", "1", "--grace", "5", "--drain-delay", "60"],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 60
        while "serving styletrain.v1.StyleTransferService on" not in log_path.read_text():
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "server did not start: " + log_path.read_text()
            time.sleep(0.2)
        port = log_path.read_text().split("on 127.0.0.1:")[1].split()[0]
        server = f"127.0.0.1:{port}"

        assert main(["client", "styles", "--server", server]) == 0
        assert capsys.readouterr().out.splitlines() == ["mosaic: mosaic", "multi: candy, mosaic, udnie"]

        pixels = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "in.jpg")
        assert main(["client", "stylize", "--server", server, "--input", str(tmp_path / "in.jpg"),
                     "--output", str(tmp_path / "out.png"), "--blend", "candy=0.7,udnie=0.3"]) == 0
        assert "model multi" in capsys.readouterr().out
        assert Image.open(tmp_path / "out.png").size == (56, 40)

        assert main(["client", "stylize", "--server", server, "--input", str(tmp_path / "in.jpg"),
                     "--output", str(tmp_path / "out.png"), "--style", "nope"]) == 2
        assert "NOT_FOUND: unknown style 'nope'" in capsys.readouterr().err

        # SIGTERM: health answers NOT_SERVING (not UNAVAILABLE) for the drain delay, new calls get UNAVAILABLE
        process.send_signal(signal.SIGTERM)
        while "draining" not in log_path.read_text():
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "server did not drain: " + log_path.read_text()
            time.sleep(0.1)
        with StyleClient(server, timeout=10) as client:
            assert client.health() == "NOT_SERVING"
        assert main(["client", "styles", "--server", server]) == 2
        assert "UNAVAILABLE: server is shutting down" in capsys.readouterr().err
        process.send_signal(signal.SIGTERM)  # a second signal ends the drain delay
        assert process.wait(timeout=20) == 0
        assert "received SIGTERM again: stopping now" in log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_client_reports_an_unreachable_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["client", "styles", "--server", "127.0.0.1:1", "--timeout", "2"]) == 2
    assert "is `styletrain serve` running there?" in capsys.readouterr().err


def test_serve_without_models_says_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--models", str(tmp_path), "--port", "0"]) == 2
    assert "no .onnx models in" in capsys.readouterr().err


def test_python_m_serving_server_takes_the_serve_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from serving.server import main as server_main

    assert server_main(["--models", str(tmp_path), "--port", "0", "--threads", "1", "--cpu"]) == 2
    assert "serving.server: error: no .onnx models in" in capsys.readouterr().err
