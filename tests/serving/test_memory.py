"""Memory-aware admission (``serving.memory``): requests hold their estimated memory against a budget."""

from __future__ import annotations

import argparse
import io
import threading
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from PIL import Image

from serving.config import ServerConfig, add_arguments, config_from_args
from serving.memory import MIB, MemoryBudget, request_bytes
from serving.pipeline import Failure
from styletrain.runtime.onnx_backend import OnnxStylizer
from styletrain.runtime.staged import Staging, run_stages

Live = Any  # tests/serving/conftest.py's Live


def encode(width: int, height: int, fmt: str = "PNG") -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def code_and_details(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


SHIPPED = Path(__file__).resolve().parents[2] / "checkpoints"


@pytest.mark.parametrize("name", ["mosaic", "multistyle"])
def test_the_default_budget_admits_two_requests_at_the_pixel_limit(name: str) -> None:
    # what the config and README promise, on the shipped width-32 nets (it once refused one 10 Mpx photo)
    path = SHIPPED / f"{name}.onnx"
    if not path.is_file():
        pytest.skip(f"needs the shipped model {path}")
    config = ServerConfig()
    side = int(config.max_pixels ** 0.5)
    assert 2 * request_bytes(OnnxStylizer(path, threads=1), side, side, max_side=None) <= config.memory_budget_bytes


def test_budget_holds_and_releases() -> None:
    budget = MemoryBudget(100 * MIB)
    with budget.hold(60 * MIB, what="a"):
        assert budget.used == 60 * MIB
        with pytest.raises(Failure, match="server busy: 60 of 100 MiB .* b needs about 50 MiB; retry") as busy:
            with budget.hold(50 * MIB, what="b"):
                pass
        assert busy.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        with budget.hold(40 * MIB, what="c"):
            assert budget.used == 100 * MIB
    assert budget.used == 0
    with pytest.raises(Failure, match="d needs about 101 MiB, more than this server's whole memory budget of 100"
                       ) as never:
        with budget.hold(101 * MIB, what="d"):
            pass
    assert never.value.code == grpc.StatusCode.INVALID_ARGUMENT and budget.used == 0
    with MemoryBudget(None).hold(10**15, what="anything"):
        pass


def test_estimate_grows_with_the_image_and_shrinks_with_max_side(start_server: Callable[..., Live]) -> None:
    stylizer = start_server().server.registry.models["multi"]
    small, large = (request_bytes(stylizer, s, s, max_side=None) for s in (64, 256))
    assert small < large
    assert request_bytes(stylizer, 256, 256, max_side=64) < large


def test_image_over_the_budget_is_refused_and_a_smaller_one_served(start_server: Callable[..., Live]) -> None:
    probe = start_server().server.registry.models["multi"]
    budget = (request_bytes(probe, 48, 48, max_side=None) + request_bytes(probe, 256, 256, max_side=None)) // 2
    live = start_server(memory_budget_bytes=budget)
    code, details = code_and_details(lambda: live.client.stylize(encode(256, 256), style="candy"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "a 256x256 image needs about" in details and "memory budget" in details
    assert "send at most about" in details, details
    assert live.client.stylize(encode(48, 48), style="candy").width == 48
    # the same large image asked for at a smaller size fits: the run is estimated at max_side
    assert live.client.stylize(encode(256, 256), style="candy", max_side=48).width == 48


def test_request_that_does_not_fit_next_to_a_running_one_is_told_to_retry(start_server: Callable[..., Live]) -> None:
    probe = start_server().server.registry.models["multi"]
    one = request_bytes(probe, 128, 128, max_side=None)
    live = start_server(memory_budget_bytes=one + one // 2, max_concurrent=2)
    entered, release = threading.Event(), threading.Event()
    for stylizer in live.server.registry.models.values():
        def held_run(*args: object, _run: Callable = stylizer.run, **kwargs: object) -> np.ndarray:
            entered.set()
            release.wait(10)
            return _run(*args, **kwargs)
        stylizer.run = held_run  # type: ignore[method-assign]
    with futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(live.client.stylize, encode(128, 128), style="candy")
        assert entered.wait(10)
        code, details = code_and_details(lambda: live.client.stylize(encode(128, 128), style="udnie"))
        release.set()
        assert first.result(timeout=20).width == 128
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "server busy" in details and "memory budget" in details and "retry" in details
    deadline = time.monotonic() + 5
    while code_and_details(lambda: live.client.stylize(encode(128, 128), style="udnie"))[0] != grpc.StatusCode.OK:
        assert time.monotonic() < deadline, "the finished call never gave its memory back"
        time.sleep(0.1)


def test_large_image_runs_in_stages_through_the_server(start_server: Callable[..., Live],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from styletrain.runtime import onnx_backend

    live = start_server()
    for stylizer in live.server.registry.models.values():
        stylizer.staging = Staging(min_pixels=64 * 64)
    staged_runs = []
    monkeypatch.setattr(onnx_backend, "run_stages", lambda *a: staged_runs.append(1) or run_stages(*a))
    image = encode(160, 120)
    response = live.client.stylize(image, style="candy", output_format="png")
    assert staged_runs == [1]
    staged = np.asarray(Image.open(io.BytesIO(response.image)))
    stylizer = live.server.registry.models[response.model]
    stylizer.staging = None
    whole = np.asarray(Image.open(io.BytesIO(live.client.stylize(image, style="candy", output_format="png").image)))
    assert staged.shape == (120, 160, 3)
    assert np.abs(staged.astype(int) - whole).max() <= 1


def test_memory_budget_option() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert config_from_args(parser.parse_args([]))[1].memory_budget_bytes == ServerConfig().memory_budget_bytes
    assert config_from_args(parser.parse_args(["--memory-budget", "300"]))[1].memory_budget_bytes == 300 * MIB
    assert config_from_args(parser.parse_args(["--memory-budget", "0"]))[1].memory_budget_bytes is None
