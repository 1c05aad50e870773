"""Real servers on free localhost ports, stopped in teardown, and clients for them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import threading
import time

import pytest

from serving.client import StyleClient
from serving.server import ServerConfig, StyleServer, create_server

SMALL_MESSAGES = 1024 * 1024
"""The test servers' message limit (1 MiB), so oversize messages are cheap to make."""
MAX_PIXELS = 256 * 256


@dataclass
class Live:
    server: StyleServer
    port: int
    client: StyleClient

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture(scope="session", autouse=True)
def no_server_threads_left() -> Iterator[None]:
    """After all serving tests, every server's worker threads must be gone."""
    yield
    deadline = time.monotonic() + 10
    while (left := [t.name for t in threading.enumerate() if t.name.startswith("styletrain-")]):
        if time.monotonic() > deadline:
            raise AssertionError(f"server threads left running: {left}")
        time.sleep(0.1)


@pytest.fixture
def start_server(onnx_models: dict[str, Path]) -> Iterator[Callable[..., Live]]:
    """Start a server on the tiny models with ``ServerConfig`` overrides; all are stopped after the test."""
    running: list[Live] = []

    def start(*, models_dir: Path | None = None, before_start: Callable[[StyleServer], None] | None = None,
              **overrides: object) -> Live:
        config = ServerConfig(**{"max_pixels": MAX_PIXELS, "max_message_bytes": SMALL_MESSAGES, "grace": 5.0,
                                 "threads": 1, **overrides})
        server, port = create_server("127.0.0.1:0", models_dir or onnx_models["dir"], config=config)
        if before_start:
            before_start(server)
        server.start()
        live = Live(server, port, StyleClient(f"127.0.0.1:{port}", timeout=20, max_message_bytes=4 * SMALL_MESSAGES))
        running.append(live)
        return live

    yield start
    for live in running:
        live.client.close()
        assert live.server.stop(0).wait(10), "server did not stop"


@pytest.fixture(scope="module")
def live(onnx_models: dict[str, Path]) -> Iterator[Live]:
    """One shared server for the tests that do not change it."""
    config = ServerConfig(max_pixels=MAX_PIXELS, max_message_bytes=SMALL_MESSAGES, threads=1)
    server, port = create_server("127.0.0.1:0", onnx_models["dir"], config=config)
    server.start()
    client = StyleClient(f"127.0.0.1:{port}", timeout=20, max_message_bytes=4 * SMALL_MESSAGES)
    yield Live(server, port, client)
    client.close()
    assert server.stop(0).wait(10), "server did not stop"
