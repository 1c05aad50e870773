"""Dynamic batching with Triton's dynamic-batcher semantics, and in-order pipelining of stream frames.

``Batcher(stylizer, max_batch, max_delay_ms, max_queue)`` owns one worker thread per model.
``submit(image, weights, deadline=...)`` queues one (3, H, W) image with its (N,) style weights and
returns a ``Future``; the worker takes the oldest request, gathers the queued requests of the same
size (in arrival order) until it has ``max_batch`` or the oldest has waited ``max_delay_ms``, and
runs them as one ``stylizer.run`` with one weights row per image, so different styles and blends
share a batch. When a request is taken from the queue:

- a cancelled future (``future.cancel()``, which the server calls when the gRPC call ends) is
  dropped; a cancelled request also leaves the queue at once, freeing its place;
- a request whose deadline has passed fails with ``DeadlineExpired`` and is not run.

The queue is bounded: ``submit`` raises ``QueueFull`` (with ``retry_after_ms``, an estimate of when
a batch's worth of room will be free) once ``max_queue`` requests wait. A running batch is never
interrupted (its other requests still want their results).

``in_order(items, work, window, executor)`` runs ``work`` over a stream's frames with up to
``window`` frames in flight and yields the results in frame order: decoding, inference and encoding
of consecutive frames overlap, and frames of one stream can share a batch.
"""

from __future__ import annotations

import contextvars
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from styletrain.runtime import Stylizer

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class QueueFull(Exception):
    """The batch queue holds ``max_queue`` requests; retry after ``retry_after_ms``."""

    def __init__(self, message: str, retry_after_ms: int) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms


class DeadlineExpired(Exception):
    """The request's deadline passed while it waited in the queue; it was not run."""


class BatcherClosed(Exception):
    """The batcher was closed (server shutdown) before the request ran."""


@dataclass(frozen=True)
class Batched:
    """One request's result: its (3, H, W) image and how it was run."""

    image: np.ndarray
    queue_ms: float
    """Time from ``submit`` until its batch started."""
    run_ms: float
    """The whole batch's run time."""
    batch_size: int


@dataclass(eq=False)
class _Pending:
    image: np.ndarray
    weights: np.ndarray
    deadline: float | None
    enqueued: float = field(default_factory=time.monotonic)
    future: Future = field(default_factory=Future)

    @property
    def size(self) -> tuple[int, int]:
        return self.image.shape[1], self.image.shape[2]


class Batcher:
    """A queue and a worker thread that runs one model's requests in batches of equal image size.

    ``max_batch`` images per run at most; the oldest request waits at most ``max_delay_ms`` for
    others to join; at most ``max_queue`` requests wait. Close it with ``close``.
    """

    def __init__(self, stylizer: Stylizer, *, max_batch: int = 8, max_delay_ms: float = 2.0,
                 max_queue: int = 32, name: str = "model") -> None:
        if max_batch < 1 or max_queue < 1 or max_delay_ms < 0:
            raise ValueError(f"max_batch and max_queue must be at least 1 and max_delay_ms at least 0; got "
                             f"{max_batch}, {max_queue} and {max_delay_ms}")
        self.stylizer, self.name = stylizer, name
        self.max_batch, self.max_delay, self.max_queue = max_batch, max_delay_ms / 1000, max_queue
        self._queue: list[_Pending] = []
        self._cond = threading.Condition()
        self._closed = False
        self._run_ms = 0.0  # moving average of a batch's run time, for the retry hint
        self._worker = threading.Thread(target=self._work, name=f"styletrain-batch-{name}", daemon=True)
        self._worker.start()

    @property
    def queued(self) -> int:
        """Requests waiting for a batch now."""
        with self._cond:
            return len(self._queue)

    def submit(self, image: np.ndarray, weights: np.ndarray, *, deadline: float | None = None) -> Future:
        """Queue one float32 (3, H, W) image with its (N,) weights; ``deadline`` is a ``time.monotonic()`` time.

        Returns a ``Future`` of ``Batched``; cancel it to withdraw the request. Raises ``QueueFull``.
        """
        pending = _Pending(np.asarray(image, dtype=np.float32), np.asarray(weights, dtype=np.float32), deadline)
        if pending.image.ndim != 3:
            raise ValueError(f"submit one (3, H, W) image; got shape {pending.image.shape}")
        with self._cond:
            if self._closed:
                raise BatcherClosed(f"model {self.name} is shutting down")
            if len(self._queue) >= self.max_queue:
                raise QueueFull(f"server busy: {len(self._queue)} requests wait for model {self.name}; "
                                f"retry in {self._retry_after_ms()} ms", self._retry_after_ms())
            self._queue.append(pending)
            self._cond.notify_all()
        pending.future.add_done_callback(lambda future: self._discard(pending) if future.cancelled() else None)
        return pending.future

    def retry_after_ms(self) -> int:
        """When a batch's worth of the queue is likely free: batches ahead x their mean run time."""
        with self._cond:
            return self._retry_after_ms()

    def _retry_after_ms(self) -> int:
        batches_ahead = math.ceil((len(self._queue) + 1) / self.max_batch)
        return max(1, math.ceil(batches_ahead * self._run_ms + 1000 * self.max_delay))

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop the worker after the batch it is running; queued requests fail with ``BatcherClosed``."""
        with self._cond:
            self._closed = True
            left, self._queue = self._queue, []
            self._cond.notify_all()
        for pending in left:
            if pending.future.set_running_or_notify_cancel():
                pending.future.set_exception(BatcherClosed(f"model {self.name} shut down before the request ran"))
        self._worker.join(timeout)

    def _discard(self, pending: _Pending) -> None:
        with self._cond:
            if pending in self._queue:
                self._queue.remove(pending)
                self._cond.notify_all()

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if batch:
                self._run(batch)

    def _next_batch(self) -> list[_Pending] | None:
        """The next batch (possibly empty, when all its requests were dropped); None once closed."""
        with self._cond:
            while True:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return None
                first = self._queue[0]
                same = [p for p in self._queue if p.size == first.size][:self.max_batch]
                wait = first.enqueued + self.max_delay - time.monotonic()
                if len(same) >= self.max_batch or wait <= 0:
                    break
                self._cond.wait(wait)  # more may arrive, or the first may leave; look again
            for pending in same:
                self._queue.remove(pending)
        now, batch = time.monotonic(), []
        for pending in same:
            if not pending.future.set_running_or_notify_cancel():
                continue  # cancelled while queued
            if pending.deadline is not None and now >= pending.deadline:
                pending.future.set_exception(DeadlineExpired(
                    f"deadline passed after {1000 * (now - pending.enqueued):.0f} ms in the queue; not run"))
                continue
            batch.append(pending)
        return batch

    def _run(self, batch: list[_Pending]) -> None:
        start = time.monotonic()
        try:
            images = np.stack([p.image for p in batch])
            weights = np.stack([p.weights for p in batch])
            output = self.stylizer.run(images, weights)
        except Exception as exc:
            for pending in batch:
                pending.future.set_exception(exc)
            return
        run_ms = 1000 * (time.monotonic() - start)
        with self._cond:
            self._run_ms = run_ms if not self._run_ms else 0.8 * self._run_ms + 0.2 * run_ms
        for i, pending in enumerate(batch):
            pending.future.set_result(Batched(output[i], 1000 * (start - pending.enqueued), run_ms, len(batch)))


def in_order(items: Iterator[T], work: Callable[[T], R], *, window: int, executor: Executor) -> Iterator[R]:
    """``work(item)`` for each item on ``executor``, at most ``window`` at once, yielding results in item order.

    The items are read on a helper task, so a finished result is yielded even while the next item
    has not arrived (a client that waits for each reply before sending its next frame still works).
    The executor needs ``window + 1`` free threads per call. Closing the generator stops reading.
    Each ``work`` runs in a copy of the caller's ``contextvars`` (per-call state, e.g. the metrics'
    current call, follows the frames onto the executor's threads).
    """
    if window < 1:
        raise ValueError(f"window must be at least 1; got {window}")
    room = threading.Semaphore(window)
    started: queue.SimpleQueue[Future | BaseException | None] = queue.SimpleQueue()
    stop = threading.Event()

    def read() -> None:
        try:
            for item in items:
                room.acquire()
                if stop.is_set():
                    return
                started.put(executor.submit(contextvars.copy_context().run, work, item))
        except Exception as exc:  # the input broke (e.g. the call ended): hand the error on
            started.put(exc)
        finally:
            started.put(None)

    executor.submit(contextvars.copy_context().run, read)
    try:
        while (next_result := started.get()) is not None:
            if isinstance(next_result, BaseException):
                raise next_result
            result = next_result.result()
            room.release()
            yield result
    finally:
        stop.set()
        room.release()  # a reader waiting for room wakes up and stops
