"""onnxruntime's process-wide state: one shared intra-op thread pool, one shared CPU arena, and the
``SessionOptions`` every styletrain session is built from, so that each session honours them.

Why a shared pool: a model holds one session plus one per stage of a staged run (22 for the shipped
nets), and each session builds its own pool of (cores - 1) threads: five models on 64 cores hold
about 7,000 idle threads, each a stack mapping and a process ID (which container pid limits count),
and five busy models run 5 x cores threads on the cores. ``share_thread_pool`` gives the process one
pool instead. onnxruntime then refuses any session built with its own pool, so only a
process whose sessions are all built here calls it: ``serving.server.serve`` does.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger(__name__)

_lock = threading.Lock()
_pool_threads: int | None = None
"""Threads of the shared pool once ``share_thread_pool`` has made it (0: one per physical core)."""
_arena_registered: bool | None = None


def share_thread_pool(threads: int | None = None) -> None:
    """From now on, build every session on one process-wide pool of ``threads`` intra-op threads
    (None: one per physical core) instead of a pool per session. Once per process; a second call
    with the same ``threads`` does nothing, with another raises ``RuntimeError``."""
    import onnxruntime as ort

    global _pool_threads
    wanted = threads or 0
    with _lock:
        if _pool_threads is None:
            setter = getattr(ort, "set_global_thread_pool_sizes", None)
            if setter is None:
                log.warning("onnxruntime %s cannot share a thread pool: one pool per session", ort.__version__)
                return
            setter(wanted, 1)  # onnxruntime raises if it already has pools
            _pool_threads = wanted
        elif _pool_threads != wanted:
            raise RuntimeError(f"this process already shares a pool of {_pool_threads or 'default'} threads")


def shares_thread_pool() -> bool:
    """Whether ``share_thread_pool`` has been called in this process."""
    return _pool_threads is not None


def session_options(threads: int | None = None, *, idle_spin: bool = True) -> Any:
    """``SessionOptions`` with every graph optimisation, sequential execution and the thread pool: the
    shared one when there is one, else a pool of ``threads`` (None: one per physical core) that spins
    while idle unless ``idle_spin`` is False (for sessions that take turns)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if shares_thread_pool():
        options.use_per_session_threads = False
    else:
        if threads is not None:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        if not idle_spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def shared_cpu_arena() -> bool:
    """Register one CPU memory arena that sessions built with ``session.use_env_allocators`` share (once
    per process); False if onnxruntime refuses. Staged runs grow it by a tile and shrink it after."""
    global _arena_registered
    with _lock:
        if _arena_registered is None:
            import onnxruntime as ort

            config = ort.OrtArenaCfg({"max_mem": 0, "arena_extend_strategy": 1, "initial_chunk_size_bytes": 2**20,
                                      "max_dead_bytes_per_chunk": -1, "initial_growth_chunk_size_bytes": 2**20})
            info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
            try:
                ort.create_and_register_allocator(info, config)
                _arena_registered = True
            except Exception as exc:  # onnxruntime raises its own types
                log.warning("no shared CPU arena for staged runs (%s); they run without one", exc)
                _arena_registered = False
        return _arena_registered
