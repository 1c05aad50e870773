"""The server with dynamic batching on (``--max-batch-size`` > 1) and its backend choice (``--backend``)."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch
from PIL import Image

from support import code_of
from serving.client import make_request
from serving.config import ServerConfig, add_arguments, config_from_args
from serving.models import ModelRegistry, choose_backend
from serving.server import StyleServer
from styletrain.errors import UserError
from styletrain.images import open_image
from styletrain.runtime import load_stylizer
from styletrain.runtime.onnx_backend import OnnxStylizer
from styletrain.runtime.staged import Staging, run_stages
from styletrain.runtime.torch_backend import TorchStylizer

Live = Any  # tests/serving/conftest.py's Live: a started server, its port and a client

BATCHED = {"max_batch_size": 4, "max_queue_delay_ms": 0.0, "max_queue": 2, "max_concurrent": 8}
LEVELS = 1
"""Largest difference in 8-bit levels between a batched reply and the image run alone: the float
outputs agree to ~1e-6, so only a value at a rounding boundary can move by one level."""


def encode(width: int, height: int, *, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


def alone(onnx_path: Path, image: bytes, weights: list[float]) -> np.ndarray:
    """The image stylized in process, one at a time."""
    stylizer = load_stylizer(onnx_path, threads=1)
    return np.asarray(stylizer(open_image(image), np.array(weights, dtype=np.float32))).astype(int)



@dataclass
class Gate:
    """Every model run of a server waits until ``open`` is set and records its (batch, height, width)."""

    open: threading.Event = field(default_factory=threading.Event)
    entered: threading.Event = field(default_factory=threading.Event)
    batches: list[tuple[int, int, int]] = field(default_factory=list)

    def install(self, server: StyleServer) -> None:
        for stylizer in server.registry.models.values():
            def gated(images: np.ndarray, *args: object, _run: Callable = stylizer.run, **kwargs: object) -> np.ndarray:
                self.batches.append((images.shape[0], images.shape[2], images.shape[3]))
                self.entered.set()
                assert self.open.wait(20), "the test never opened the gate"
                return _run(images, *args, **kwargs)
            stylizer.run = gated  # type: ignore[method-assign]


@pytest.fixture
def gate() -> Iterator[Gate]:
    gate = Gate()
    yield gate
    gate.open.set()  # never leave a batch worker stuck: the server could not stop


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.01)


def busy(live: Live, gate: Gate) -> futures.Future:
    """Make the multi model's batch worker busy with one 16x16 request held at the gate."""
    gate.install(live.server)
    first = live.client.stub.Stylize.future(make_request(encode(16, 16), style="candy"), timeout=30)
    assert gate.entered.wait(10)
    return first


# --- batching through gRPC -------------------------------------------------------------------


def test_concurrent_requests_with_different_styles_share_a_batch(start_server: Callable[..., Live],
                                                                  onnx_models: dict[str, Path]) -> None:
    # a long delay: the batch runs when the fourth request arrives (max_batch), not on a timer
    live = start_server(max_batch_size=4, max_queue_delay_ms=60_000, max_concurrent=8)
    choices = [{"style": "candy"}, {"style": "udnie"}, {"blend": {"candy": 1, "mosaic": 1}},
               {"blend": {"candy": 0.2, "mosaic": 0.3, "udnie": 0.5}}]
    weights = [[1, 0, 0], [0, 0, 1], [0.5, 0.5, 0], [0.2, 0.3, 0.5]]
    images = [encode(40, 24, seed=i) for i in range(4)]
    with futures.ThreadPoolExecutor(4) as pool:
        calls = [pool.submit(live.client.stylize, image, output_format="png", model="multi", **choice)
                 for image, choice in zip(images, choices)]
        responses = [c.result(timeout=60) for c in calls]
    assert [r.batch_size for r in responses] == [4, 4, 4, 4]
    assert all(r.queue_ms >= 0 and r.backend == "onnxruntime" and r.device == "cpu" for r in responses)
    for image, w, response in zip(images, weights, responses):
        assert np.abs(decode(response.image) - alone(onnx_models["multi"], image, w)).max() <= LEVELS


def test_a_large_image_runs_alone_in_stages_not_in_a_batch(start_server: Callable[..., Live],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch runs whole images: a large one there would need several times the memory the budget
    charged its staged run."""
    from styletrain.runtime import onnx_backend

    live = start_server(**BATCHED)
    for stylizer in live.server.registry.models.values():
        stylizer.staging = Staging(min_pixels=64 * 64)
    submitted: list[tuple[int, ...]] = []
    staged: list[int] = []
    for batcher in live.server.servicer.batchers.values():
        monkeypatch.setattr(batcher, "submit", lambda image, *a, _submit=batcher.submit, **k:
                            submitted.append(image.shape) or _submit(image, *a, **k))
    monkeypatch.setattr(onnx_backend, "run_stages", lambda *a: staged.append(1) or run_stages(*a))
    response = live.client.stylize(encode(160, 120), style="candy")
    assert (staged, submitted, response.batch_size) == ([1], [], 1)
    live.client.stylize(encode(48, 48), style="candy")
    assert (staged, submitted) == ([1], [(3, 48, 48)])


def test_a_stream_with_batching_and_a_window_keeps_its_order(start_server: Callable[..., Live],
                                                             onnx_models: dict[str, Path]) -> None:
    live = start_server(max_batch_size=4, max_queue_delay_ms=5.0, stream_window=4, max_concurrent=8)
    sizes = [(32 + 8 * (i % 3), 24) for i in range(12)]
    blends = [{"candy": i, "udnie": 12 - i} for i in range(12)]
    frames = [(500 + i, make_request(encode(w, h, seed=i), blend=blend, output_format="png", model="multi"))
              for i, ((w, h), blend) in enumerate(zip(sizes, blends))]
    responses = list(live.client.stream(iter(frames)))
    assert [r.frame_id for r in responses] == [500 + i for i in range(12)]
    for i, (response, (w, h), blend) in enumerate(zip(responses, sizes, blends)):
        assert response.WhichOneof("result") == "response", response.error.message
        weights = [blend["candy"] / 12, 0, blend["udnie"] / 12]
        expected = alone(onnx_models["multi"], encode(w, h, seed=i), weights)
        assert np.abs(decode(response.response.image) - expected).max() <= LEVELS


def test_a_full_queue_answers_resource_exhausted_with_a_pushback_trailer(start_server: Callable[..., Live],
                                                                          gate: Gate) -> None:
    live = start_server(**BATCHED)
    first = busy(live, gate)
    batcher = live.server.servicer.batchers["multi"]
    queued = [live.client.stub.Stylize.future(make_request(encode(16, 16, seed=i), style="udnie"), timeout=30)
              for i in range(2)]
    wait_until(lambda: batcher.queued == 2, "two requests are queued")
    with pytest.raises(grpc.RpcError) as info:
        live.client.stylize(encode(16, 16), style="candy")
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "server busy: 2 requests wait for model multi; retry in" in info.value.details()
    trailers = dict(info.value.trailing_metadata())
    assert int(trailers["grpc-retry-pushback-ms"]) >= 1
    # health and ListStyles never wait behind the queue
    assert live.client.health(timeout=2.0) == "SERVING"
    assert len(live.client.list_styles(timeout=2.0)) == 2
    gate.open.set()
    assert first.result().batch_size == 1
    assert [q.result().batch_size for q in queued] == [2, 2]


def test_a_deadline_that_passes_in_the_queue_is_not_run(start_server: Callable[..., Live], gate: Gate) -> None:
    live = start_server(**BATCHED)
    first = busy(live, gate)
    assert code_of(lambda: live.client.stylize(encode(24, 24), style="udnie", timeout=0.3)) == \
        grpc.StatusCode.DEADLINE_EXCEEDED
    gate.open.set()
    assert first.result().width == 16
    assert live.client.stylize(encode(32, 32), style="udnie").width == 32
    assert (1, 24, 24) not in gate.batches
    assert gate.batches == [(1, 16, 16), (1, 32, 32)]


def test_a_cancelled_call_leaves_the_queue(start_server: Callable[..., Live], gate: Gate) -> None:
    live = start_server(**BATCHED)
    first = busy(live, gate)
    batcher = live.server.servicer.batchers["multi"]
    call = live.client.stub.Stylize.future(make_request(encode(24, 24), style="udnie"), timeout=30)
    wait_until(lambda: batcher.queued == 1, "the call is queued")
    call.cancel()
    wait_until(lambda: batcher.queued == 0, "the cancelled call has left the queue")
    gate.open.set()
    assert first.result().width == 16
    assert live.client.stylize(encode(32, 32), style="udnie").width == 32
    assert gate.batches == [(1, 16, 16), (1, 32, 32)]


def test_batching_is_off_on_the_cpu_by_default(live: Live) -> None:
    response = live.client.stylize(encode(32, 32), style="candy")
    assert (response.batch_size, response.queue_ms) == (1, 0.0)
    assert live.server.servicer.batchers == {}
    assert (live.server.servicer.max_concurrent, live.server.servicer.stream_window) == (2, 1)


# --- settings --------------------------------------------------------------------------------


def test_batching_defaults_follow_the_device() -> None:
    config = ServerConfig()
    assert (config.batch_size_for("cpu"), config.batch_size_for("cuda")) == (1, 8)
    assert (config.slots(1), config.slots(8)) == (2, 8 + config.max_queue)
    assert (config.window(False, 2), config.window(True, 40)) == (1, 4)
    # each frame takes a slot without waiting: a stream never holds more frames than there are slots
    assert config.window(True, 3) == 3
    assert ServerConfig(stream_window=3).window(False, 3) == 3
    with pytest.raises(UserError, match="--stream-window 4 is more than the 2 images"):
        ServerConfig(stream_window=4).window(False, 2)
    assert ServerConfig(max_batch_size=4, max_concurrent=3).batch_size_for("cpu") == 4
    assert ServerConfig(max_concurrent=3).slots(8) == 3
    assert ServerConfig(warm_sizes=[(1280, 720)], max_batch_size=6).warm_shapes("cuda") == \
        [(1, 720, 1280), (2, 720, 1280), (4, 720, 1280), (6, 720, 1280)]


def test_serve_options() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    _, config = config_from_args(parser.parse_args([]))
    settings = (config.backend, config.max_batch_size, config.max_queue_delay_ms, config.max_queue)
    assert settings == ("auto", None, 2.0, 32)
    assert config.stream_idle_timeout == 60.0
    assert config_from_args(parser.parse_args(["--stream-idle-timeout", "0"]))[1].stream_idle_timeout is None
    _, config = config_from_args(parser.parse_args(
        ["--backend", "torch", "--precision", "float32", "--max-batch-size", "16", "--max-queue-delay-ms", "0.5",
         "--max-queue", "64", "--stream-window", "3", "--warm-sizes", "1280x720", "512x512", "--cpu"]))
    assert (config.backend, config.precision, config.device, config.max_batch_size) == ("torch", "float32", "cpu", 16)
    assert (config.max_queue_delay_ms, config.max_queue, config.stream_window) == (0.5, 64, 3)
    assert config.warm_sizes == [(1280, 720), (512, 512)]
    for bad in (["--max-queue", "0"], ["--max-batch-size", "x"], ["--warm-sizes", "720"], ["--backend", "tf"],
                ["--memory-budget", "-5"], ["--max-pixels", "-1"], ["--max-message-mb", "0"], ["--threads", "0"],
                ["--grace", "-1"], ["--drain-delay", "nan"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


# --- backend choice --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def with_checkpoints(onnx_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny models with their slim checkpoints next to them (NAME.onnx and NAME.ckpt)."""
    folder = tmp_path_factory.mktemp("with_checkpoints")
    for name, onnx, ckpt in (("multi", "multi", "multi_ckpt"), ("mosaic", "single", "single_ckpt")):
        shutil.copy(onnx_models[onnx], folder / f"{name}.onnx")
        shutil.copy(onnx_models[ckpt], folder / f"{name}.ckpt")
    return folder


def test_choose_backend(with_checkpoints: Path, onnx_models: dict[str, Path]) -> None:
    model, bare = with_checkpoints / "multi.onnx", onnx_models["multi"]  # the second has no .ckpt beside it
    gpu, no_gpu = (lambda: True), (lambda: False)
    assert choose_backend(model, "auto", cuda=gpu) == ("torch", "cuda")
    assert choose_backend(model, "auto", cuda=no_gpu) == ("onnxruntime", None)
    assert choose_backend(model, "auto", device="cpu", cuda=gpu) == ("onnxruntime", "cpu")
    assert choose_backend(bare, "auto", cuda=gpu) == ("onnxruntime", None)
    assert choose_backend(model, "onnxruntime", cuda=gpu) == ("onnxruntime", None)
    assert choose_backend(model, "torch", cuda=no_gpu) == ("torch", "cpu")
    assert choose_backend(model, "torch", cuda=gpu) == ("torch", "cuda")
    with pytest.raises(UserError, match=r"--backend torch runs the slim checkpoint next to each \.onnx; .*multi\.ckpt "
                                        r"is missing"):
        choose_backend(bare, "torch", cuda=gpu)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the choice on a machine without CUDA")
def test_auto_on_a_cpu_only_machine_is_onnxruntime_and_never_imports_torch(with_checkpoints: Path) -> None:
    code = ("import sys; from serving.models import ModelRegistry; "
            f"r = ModelRegistry.from_folder({str(with_checkpoints)!r}, threads=1); "
            "print(sorted({(m.backend, m.device) for m in r.models.values()}), 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.stdout.strip() == "[('onnxruntime', 'cpu')] False"


def test_torch_backend_serves_the_checkpoints_and_says_so(start_server: Callable[..., Live],
                                                          with_checkpoints: Path) -> None:
    live = start_server(models_dir=with_checkpoints, backend="torch", device="cpu")
    assert all(isinstance(m, TorchStylizer) for m in live.server.registry.models.values())
    models = {m.name: (m.backend, m.device, list(m.providers)) for m in live.client.list_styles()}
    assert models == {"mosaic": ("torch", "cpu", ["torch:cpu"]), "multi": ("torch", "cpu", ["torch:cpu"])}
    image = encode(40, 24, seed=5)
    response = live.client.stylize(image, blend={"candy": 1, "udnie": 3}, output_format="png")
    assert (response.backend, response.device, response.model) == ("torch", "cpu", "multi")
    expected = alone(with_checkpoints / "multi.onnx", image, [0.25, 0, 0.75])
    assert np.abs(decode(response.image) - expected).max() <= LEVELS


def test_a_checkpoint_that_does_not_match_its_export_is_refused(with_checkpoints: Path, tmp_path: Path) -> None:
    shutil.copy(with_checkpoints / "multi.onnx", tmp_path / "multi.onnx")
    from support import make_checkpoint

    make_checkpoint(tmp_path / "multi.ckpt", ["candy", "mosaic", "udnie"], seed=7)  # other weights
    with pytest.raises(UserError, match=r"multi: torch on cpu \(float32\) differs from onnxruntime by up to .* "
                                        r"\(tolerance 0\.0005\)"):
        ModelRegistry.from_folder(tmp_path, backend="torch", device="cpu", threads=1)
    assert isinstance(ModelRegistry.from_folder(tmp_path, threads=1).models["multi"], OnnxStylizer)
