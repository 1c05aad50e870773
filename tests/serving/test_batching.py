"""``serving.batching``: the dynamic batcher on its own (real onnxruntime model or a gated fake) and ``in_order``."""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import numpy as np
import pytest

from serving.batching import Batched, Batcher, DeadlineExpired, QueueFull, in_order
from styletrain.metadata import ModelMetadata
from styletrain.runtime import Stylizer, load_stylizer

BATCHED_VS_ALONE_ATOL = 1e-5
"""Mixed batch vs one image at a time, fp32 onnxruntime on the CPU: measured ~1e-6 (accumulation order)."""


class Gated(Stylizer):
    """A fake model whose runs wait for ``gate`` and record each batch's (batch, height, width)."""

    backend, device, providers = "fake", "cpu", ["fake"]

    def __init__(self) -> None:
        self.metadata = ModelMetadata(style_names=["a", "b"])
        self.style_names = self.metadata.style_names
        self.gate, self.entered = threading.Event(), threading.Event()
        self.batches: list[tuple[int, int, int]] = []
        self.error: Exception | None = None

    def run(self, batch: np.ndarray, style_weights: np.ndarray, *, options: object = None) -> np.ndarray:
        self.batches.append((batch.shape[0], batch.shape[2], batch.shape[3]))
        self.entered.set()
        assert self.gate.wait(20), "the test never opened the gate"
        if self.error is not None and len(self.batches) > 1:
            raise self.error
        return batch * style_weights[:, :1, None, None]


def image(height: int = 16, width: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((3, height, width), dtype=np.float32)


@pytest.fixture
def gated() -> Iterator[tuple[Gated, list[Batcher]]]:
    """A gated fake model; batchers made on it are closed (gate opened) after the test."""
    model, made = Gated(), []
    yield model, made
    model.gate.set()
    for batcher in made:
        batcher.close()


def busy_batcher(model: Gated, made: list[Batcher], **settings: object) -> tuple[Batcher, futures.Future]:
    """A batcher whose worker is stuck inside a run (the gate is closed) on one 16x16 image."""
    batcher = Batcher(model, **{"max_batch": 4, "max_delay_ms": 0.0, "max_queue": 4, **settings})
    made.append(batcher)
    first = batcher.submit(image(), np.array([1, 0], dtype=np.float32))
    assert model.entered.wait(10)
    return batcher, first


def test_mixed_styles_and_blends_in_one_batch_equal_one_at_a_time(onnx_models: dict[str, Path]) -> None:
    stylizer = load_stylizer(onnx_models["multi"], threads=1)
    rows = np.array([[1, 0, 0], [0, 0, 1], [0.5, 0.5, 0], [0.2, 0.3, 0.5]], dtype=np.float32)
    images = [image(24, 40, seed=i) for i in range(4)]
    # a long delay: the batch runs when the fourth request arrives (max_batch), not on a timer
    batcher = Batcher(stylizer, max_batch=4, max_delay_ms=60_000, max_queue=8)
    try:
        results = [f.result(timeout=60) for f in [batcher.submit(x, w) for x, w in zip(images, rows)]]
    finally:
        batcher.close()
    assert [r.batch_size for r in results] == [4, 4, 4, 4]
    for x, w, result in zip(images, rows, results):
        alone = stylizer.run(x[None], w)[0]
        np.testing.assert_allclose(result.image, alone, rtol=0, atol=BATCHED_VS_ALONE_ATOL)
        assert result.queue_ms >= 0 and result.run_ms > 0


def test_only_requests_of_one_size_share_a_batch_and_the_oldest_goes_first(gated) -> None:
    model, made = gated
    batcher, first = busy_batcher(model, made, max_batch=2, max_queue=8)
    sizes = [(16, 24), (32, 16), (16, 24), (32, 16), (32, 16)]
    queued = [batcher.submit(image(h, w), np.array([0.5, 0.5], dtype=np.float32)) for h, w in sizes]
    model.gate.set()
    assert all(isinstance(f.result(timeout=10), Batched) for f in [first, *queued])
    assert model.batches == [(1, 16, 16), (2, 16, 24), (2, 32, 16), (1, 32, 16)]
    assert [f.result().batch_size for f in queued] == [2, 2, 2, 2, 1]


def test_a_request_whose_deadline_passed_in_the_queue_is_not_run(gated) -> None:
    model, made = gated
    batcher, first = busy_batcher(model, made)
    late = batcher.submit(image(20, 20), np.array([1, 0], dtype=np.float32), deadline=time.monotonic() - 1)
    on_time = batcher.submit(image(20, 20), np.array([0, 1], dtype=np.float32), deadline=time.monotonic() + 600)
    model.gate.set()
    with pytest.raises(DeadlineExpired, match="deadline passed after .* ms in the queue; not run"):
        late.result(timeout=10)
    assert on_time.result(timeout=10).batch_size == 1
    assert model.batches == [(1, 16, 16), (1, 20, 20)]


def test_a_cancelled_request_leaves_the_queue_at_once(gated) -> None:
    model, made = gated
    batcher, first = busy_batcher(model, made)
    withdrawn = batcher.submit(image(20, 20), np.array([1, 0], dtype=np.float32))
    assert batcher.queued == 1
    assert withdrawn.cancel()
    assert batcher.queued == 0
    model.gate.set()
    first.result(timeout=10)
    batcher.close()
    assert model.batches == [(1, 16, 16)]


def test_a_full_queue_refuses_with_a_retry_hint(gated) -> None:
    model, made = gated
    batcher, first = busy_batcher(model, made, max_queue=2)
    for seed in range(2):
        batcher.submit(image(seed=seed), np.array([1, 0], dtype=np.float32))
    with pytest.raises(QueueFull, match="server busy: 2 requests wait for model model; retry in") as info:
        batcher.submit(image(), np.array([1, 0], dtype=np.float32))
    assert info.value.retry_after_ms >= 1


def test_errors_reach_every_request_of_the_batch(gated) -> None:
    model, made = gated
    batcher, first = busy_batcher(model, made)
    model.error = RuntimeError("out of memory")  # for every batch after the first
    bad = [batcher.submit(image(), np.array([1, 0], dtype=np.float32)) for _ in range(2)]
    model.gate.set()
    first.result(timeout=10)
    for future in bad:
        with pytest.raises(RuntimeError, match="out of memory"):
            future.result(timeout=10)
    assert model.batches == [(1, 16, 16), (2, 16, 16)]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_batch and max_queue must be at least 1"):
        Batcher(Gated(), max_batch=0)


def test_in_order_keeps_the_order_when_later_items_finish_first() -> None:
    done = [threading.Event() for _ in range(6)]

    def work(i: int) -> int:
        assert done[i].wait(10)
        return i * 10

    with futures.ThreadPoolExecutor(5) as pool:
        results = in_order(iter(range(6)), work, window=3, executor=pool)
        for i in (2, 1, 0, 5, 4, 3):  # each window finishes back to front
            done[i].set()
        assert list(results) == [0, 10, 20, 30, 40, 50]


def test_in_order_yields_before_the_next_item_arrives() -> None:
    """A client that sends its next frame only after the previous reply (lockstep) must not hang."""
    replied = [threading.Event() for _ in range(4)]

    def lockstep() -> Iterator[int]:
        for i in range(4):
            if i:
                assert replied[i - 1].wait(10), "the reply to the previous item never came"
            yield i

    with futures.ThreadPoolExecutor(3) as pool:
        for result in in_order(lockstep(), lambda i: i, window=2, executor=pool):
            replied[result].set()
        assert all(e.is_set() for e in replied)


CALL: contextvars.ContextVar[str] = contextvars.ContextVar("CALL", default="none")


def test_in_order_runs_work_in_the_callers_context() -> None:
    """Per-call state (the metrics' current call) must follow a stream's frames onto the pool's threads."""
    CALL.set("stream 1")
    with futures.ThreadPoolExecutor(4) as pool:
        assert list(in_order(iter(range(5)), lambda i: (i, CALL.get()), window=3, executor=pool)) == [
            (i, "stream 1") for i in range(5)]


def test_in_order_stops_reading_when_closed() -> None:
    read = []

    def items() -> Iterator[int]:
        for i in range(100):
            read.append(i)
            yield i

    with futures.ThreadPoolExecutor(3) as pool:
        results = in_order(items(), lambda i: i, window=2, executor=pool)
        assert next(results) == 0
        results.close()
    assert len(read) <= 4  # the window (2) plus the items read while it filled
