"""The server's settings (``ServerConfig``) and the command-line options that set them.

Light on purpose (argparse and a dataclass): ``styletrain serve`` and ``python -m serving.server``
both build their options here without importing grpc or onnxruntime.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_MODELS_DIR = Path("checkpoints")
DEFAULT_PORT = 50051
DEFAULT_MAX_MESSAGE_BYTES = 32 * 1024 * 1024
DEFAULT_MEMORY_BUDGET_BYTES = 1024 * 1024 * 1024


@dataclass
class ServerConfig:
    """Everything ``styletrain serve`` can set; the defaults suit one CPU box."""

    models_dir: str | Path = DEFAULT_MODELS_DIR
    threads: int | None = None
    """onnxruntime intra-op threads per model (None: one per physical core)."""
    max_concurrent: int = 2
    """Inference calls (unary calls and stream frames) running at once; more get RESOURCE_EXHAUSTED."""
    max_streams: int = 4
    """Open ``StylizeStream`` calls; each holds a server thread."""
    max_pixels: int = 16_000_000
    memory_budget_bytes: int | None = DEFAULT_MEMORY_BUDGET_BYTES
    """Estimated peak memory of the requests running at once (``serving.memory``; None: no limit).
    The default fits two requests at ``max_pixels`` with room to spare."""
    min_side: int = 16
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    grace: float = 10.0
    """Seconds in-flight calls get to finish on shutdown."""
    providers: list[str] | None = None
    """onnxruntime providers (None: CUDA first when available, else CPU)."""

    def channel_options(self) -> list[tuple[str, Any]]:
        """Message limits; no SO_REUSEPORT, so a port already in use is an error, not a silent share."""
        return [("grpc.max_receive_message_length", self.max_message_bytes),
                ("grpc.max_send_message_length", self.max_message_bytes), ("grpc.so_reuseport", 0)]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The server's options, with ``ServerConfig``'s defaults."""
    d = ServerConfig()
    p.add_argument("--models", default=str(d.models_dir), metavar="DIR",
                   help=f"folder of .onnx models exported with `styletrain export` (default: {d.models_dir})")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"TCP port (default {DEFAULT_PORT}; 0 picks a free one)")
    p.add_argument("--host", default="[::]", help="address to bind (default [::], all interfaces)")
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads per model (default: one per core)")
    p.add_argument("--max-concurrent", type=int, default=d.max_concurrent,
                   help=f"inference calls run at once; more get RESOURCE_EXHAUSTED (default {d.max_concurrent})")
    p.add_argument("--max-pixels", type=int, default=d.max_pixels,
                   help=f"largest input image, width x height (default {d.max_pixels})")
    budget = d.memory_budget_bytes // 2**20 if d.memory_budget_bytes else 0
    p.add_argument("--memory-budget", type=int, default=budget, metavar="MIB",
                   help="estimated memory (MiB) the requests running at once may use; a request that does not "
                        f"fit now gets RESOURCE_EXHAUSTED, one that never can INVALID_ARGUMENT (default {budget}; "
                        "0: no limit)")
    p.add_argument("--max-message-mb", type=int, default=d.max_message_bytes // 2**20,
                   help=f"largest gRPC message in MiB (default {d.max_message_bytes // 2**20})")
    p.add_argument("--grace", type=float, default=d.grace,
                   help=f"seconds in-flight calls get to finish after SIGTERM (default {d.grace:g})")
    p.add_argument("--cpu", action="store_true", help="use the CPU even when CUDA is available")


def config_from_args(args: argparse.Namespace) -> tuple[str, ServerConfig]:
    """The address to bind and the ``ServerConfig`` that ``add_arguments``'s options describe."""
    config = ServerConfig(models_dir=args.models, threads=args.threads, max_concurrent=args.max_concurrent,
                          max_pixels=args.max_pixels, max_message_bytes=args.max_message_mb * 2**20,
                          memory_budget_bytes=args.memory_budget * 2**20 or None,
                          grace=args.grace, providers=["CPUExecutionProvider"] if args.cpu else None)
    return f"{args.host}:{args.port}", config
