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
from serving.config import DEFAULT_HOST, DEFAULT_PORT, TOKEN_ENV, ServerConfig, config_from_args
from styletrain.cli import build_parser, main
from styletrain.errors import UserError
from styletrain.runtime import ort_env


def test_serve_then_client_commands_then_sigterm(onnx_models: dict[str, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "styletrain", "serve", "--models", str(onnx_models["dir"]),
             "--port", "0", "--threads", "2", "--grace", "5", "--drain-delay", "60"],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 60
        while "serving styletrain.v1.StyleTransferService on" not in log_path.read_text():
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "server did not start: " + log_path.read_text()
            time.sleep(0.2)
        port = log_path.read_text().split("on 127.0.0.1:")[1].split()[0]
        server = f"127.0.0.1:{port}"
        # The two models' sessions (1 + staged each) share one pool of 2 threads, not one pool each.
        tasks = Path(f"/proc/{process.pid}/task")
        if tasks.is_dir():
            assert len(list(tasks.iterdir())) < 20, len(list(tasks.iterdir()))  # 10 measured; 31 unshared

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
    assert not ort_env.shares_thread_pool()  # refused before the process's onnxruntime setup changed


def test_python_m_serving_server_takes_the_serve_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from serving.server import main as server_main

    assert server_main(["--models", str(tmp_path), "--port", "0", "--threads", "1", "--cpu"]) == 2
    assert "serving.server: error: no .onnx models in" in capsys.readouterr().err
    assert not ort_env.shares_thread_pool()


@pytest.mark.parametrize("argv", [["serve", "--port", "99999"], ["serve", "--port", "-1"],
                                  ["serve", "--metrics-port", "99999"], ["serve", "--metrics-port", "http"],
                                  ["demo", "--port", "65536"]])
def test_port_options_take_0_to_65535(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(argv)
    assert stop.value.code == 2
    assert f"argument {argv[1]}: expected a port number from 0 to 65535, got {argv[2]!r}" in capsys.readouterr().err


def test_port_bounds_are_accepted() -> None:
    for port in ("0", "65535"):
        assert build_parser().parse_args(["serve", "--port", port, "--metrics-port", port]).port == int(port)
        assert build_parser().parse_args(["demo", "--port", port]).port == int(port)


def test_a_metrics_port_out_of_range_is_a_user_error() -> None:
    from serving.metrics import ServerMetrics

    with pytest.raises(UserError, match="cannot serve metrics on 127.0.0.1:99999: "):
        ServerMetrics(host="127.0.0.1", port=99999).start()


def test_serve_options_reach_the_server_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    args = build_parser().parse_args(["serve", "--host", "0.0.0.0", "--port", "6001", "--max-pixels", "1000000",
                                      "--max-message-mb", "8", "--max-concurrent", "3", "--grace", "2.5",
                                      "--variant", "int8", "--metrics-port", "9464"])
    address, config = config_from_args(args)
    assert address == "0.0.0.0:6001"
    assert (config.max_pixels, config.max_message_bytes, config.max_concurrent) == (1_000_000, 8 * 2**20, 3)
    assert (config.grace, config.variant, config.metrics_port) == (2.5, "int8", 9464)
    address, config = config_from_args(build_parser().parse_args(["serve"]))  # the defaults are ServerConfig's
    default = ServerConfig()
    assert address == f"{DEFAULT_HOST}:{DEFAULT_PORT}"
    assert (config.max_pixels, config.max_message_bytes, config.max_concurrent, config.grace, config.variant) == \
        (default.max_pixels, default.max_message_bytes, default.max_concurrent, default.grace, default.variant)


def test_serve_leaves_no_log_handler_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    # a second main() in one process logged every server line twice (and, under pytest, to closed streams)
    import logging

    import serving.server

    monkeypatch.setattr(serving.server, "serve", lambda address, config: None)
    server_log = logging.getLogger("serving")
    before = list(server_log.handlers)
    for _ in range(2):
        assert main(["serve", "--port", "0"]) == 0
        assert server_log.handlers == before
