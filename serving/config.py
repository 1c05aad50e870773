"""The server's settings (``ServerConfig``) and the command-line options that set them.

Light on purpose (argparse and a dataclass): ``styletrain serve`` and ``python -m serving.server``
both build their options here without importing grpc or onnxruntime.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_MODELS_DIR = Path("checkpoints")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 50051
DEFAULT_MAX_MESSAGE_BYTES = 32 * 1024 * 1024
TOKEN_ENV = "STYLETRAIN_TOKEN"
BACKENDS = ("auto", "onnxruntime", "torch")
PRECISIONS = ("float16", "bfloat16", "float32")
CUDA_MAX_BATCH = 8
"""Dynamic batching's default batch size for models on CUDA (on the CPU batching is off by default:
on 2 cores a batch only queues work one image at a time would finish as fast)."""
UNBATCHED_SLOTS = 2
BATCHED_STREAM_WINDOW = 4
DEFAULT_MEMORY_BUDGET_BYTES = 2560 * 2**20
"""Two requests at ``max_pixels`` (16 Mpx) at once on the width-32 nets: about 1.1 GiB each in stages
(68 bytes a pixel measured at 4000x4000, ``benchmarks/RESULTS.md``), with room to spare."""


@dataclass
class ServerConfig:
    """Everything ``styletrain serve`` can set; the defaults suit one CPU box."""

    models_dir: str | Path = DEFAULT_MODELS_DIR
    threads: int | None = None
    """onnxruntime intra-op threads (None: one per physical core): under ``serve``, of the one pool all
    sessions share (``styletrain.runtime.ort_env``); in a server made by ``create_server`` alone, of
    each session's own pool."""
    max_concurrent: int | None = None
    """Admission slots: images a server holds at once (decoded, queued for a batch, running or being
    encoded), unary calls and stream frames alike; more get RESOURCE_EXHAUSTED. None: 2 without
    batching, else the largest batch plus ``max_queue`` (a running batch and a full queue)."""
    max_streams: int = 4
    """Open ``StylizeStream`` calls; each holds a server thread."""
    stream_idle_timeout: float | None = 60.0
    """Seconds a stream may go with no frame in flight (no reply owed, none arriving) before it is
    cancelled, so an idle or abandoned stream gives its place back (None or 0: never)."""
    max_pixels: int = 16_000_000
    memory_budget_bytes: int | None = DEFAULT_MEMORY_BUDGET_BYTES
    """Estimated peak memory of the requests running at once (``serving.memory``; None: no limit)."""
    min_side: int = 16
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    grace: float = 10.0
    """Seconds in-flight calls get to finish on shutdown."""
    providers: list[str] | None = None
    """onnxruntime providers (None: CUDA first when available, else CPU)."""
    metrics_port: int | None = None
    """Port of the Prometheus ``/metrics`` endpoint, on the gRPC host (None: off; 0: a free port)."""
    # Shutdown and security (serving.lifecycle, serving.security).
    drain_delay: float = 5.0
    """Seconds after SIGTERM that health reports NOT_SERVING and new calls get UNAVAILABLE, before stopping."""
    reflection: bool = True
    tls_cert: str | Path | None = None
    """PEM certificate (chain); with ``tls_key``, the server speaks TLS only."""
    tls_key: str | Path | None = None
    tls_ca: str | Path | None = None
    """PEM CA: clients must show a certificate it signed (mutual TLS)."""
    token: str | None = field(default=None, repr=False)
    """Calls (but health checks) need ``authorization: Bearer <token>``."""
    backend: str = "auto"
    """"auto": torch on CUDA for each model with a ``NAME.ckpt`` next to its ``NAME.onnx`` when torch
    sees a GPU, onnxruntime otherwise; or "onnxruntime" / "torch" for every model."""
    device: str | None = None
    """"cpu" keeps every backend on the CPU; None lets each use CUDA when it can."""
    precision: str | None = None
    """torch on CUDA: "float16" (None), "bfloat16" or "float32"; checked against the .onnx at load."""
    max_batch_size: int | None = None
    """Dynamic batching: images run together at most (1: off). None: 8 for models on CUDA, 1 on the CPU."""
    max_queue_delay_ms: float = 2.0
    """How long the oldest queued request waits for others to join its batch."""
    max_queue: int = 32
    """Requests waiting for a batch, per model; beyond it RESOURCE_EXHAUSTED with a retry hint."""
    stream_window: int | None = None
    """Frames of one stream in flight at once (decode, run, encode overlap; results stay in order).
    None: 4 when some model batches, else 1."""
    variant: str = "auto"
    """Which file of each model runs: fp32 ``NAME.onnx`` or ``NAME.int8.onnx`` (``styletrain.runtime.variants``)."""
    warm_sizes: list[tuple[int, int]] = field(default_factory=list)
    """(width, height) sizes whose CUDA graphs (torch on CUDA) are captured at start, for every
    power-of-two batch up to the model's batch size."""

    def batch_size_for(self, device: str) -> int:
        """Images per batch for a model on ``device``: the setting, or 8 on CUDA and 1 (off) on the CPU."""
        if self.max_batch_size is not None:
            return self.max_batch_size
        return CUDA_MAX_BATCH if device == "cuda" else 1

    def slots(self, largest_batch: int) -> int:
        """Admission slots, given the largest batch size of the loaded models (1: no batching)."""
        if self.max_concurrent is not None:
            return self.max_concurrent
        return UNBATCHED_SLOTS if largest_batch <= 1 else largest_batch + self.max_queue

    def window(self, batching: bool, slots: int) -> int:
        """Frames of one stream in flight: no more than the admission ``slots``, since each frame takes
        one without waiting and a stream must not turn its own frames away as "busy"."""
        if self.stream_window is None:
            return min(BATCHED_STREAM_WINDOW if batching else 1, slots)
        if self.stream_window > slots:
            from styletrain.errors import UserError

            raise UserError(f"--stream-window {self.stream_window} is more than the {slots} images the server "
                            "holds at once, so a stream would refuse its own frames; lower it or raise "
                            "--max-concurrent")
        return self.stream_window

    def warm_shapes(self, device: str) -> list[tuple[int, int, int]]:
        """(batch, height, width) graph buckets to capture at start for a model on ``device``."""
        largest = self.batch_size_for(device)
        batches = sorted({*(2 ** i for i in range(largest.bit_length()) if 2 ** i <= largest), largest})
        return [(batch, height, width) for width, height in self.warm_sizes for batch in batches]

    def channel_options(self) -> list[tuple[str, Any]]:
        """Message limits; no SO_REUSEPORT, so a port already in use is an error, not a silent share."""
        return [("grpc.max_receive_message_length", self.max_message_bytes),
                ("grpc.max_send_message_length", self.max_message_bytes), ("grpc.so_reuseport", 0)]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The server's options, with ``ServerConfig``'s defaults."""
    d = ServerConfig()
    p.add_argument("--models", default=str(d.models_dir), metavar="DIR",
                   help=f"folder of .onnx models exported with `styletrain export` (default: {d.models_dir})")
    p.add_argument("--port", type=port, default=DEFAULT_PORT,
                   help=f"TCP port (default {DEFAULT_PORT}; 0 picks a free one)")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST}, this machine "
                   "only; 0.0.0.0 or [::] for every interface, best with TLS and a token)")
    p.add_argument("--threads", type=_bounded(int, 1),
                   help="onnxruntime intra-op threads, one pool for all models (default: one per core)")
    p.add_argument("--max-concurrent", type=_bounded(int, 1),
                   help="images held at once (decoded, queued, running or encoding); more get RESOURCE_EXHAUSTED "
                        f"(default {UNBATCHED_SLOTS} without batching, else max batch size + --max-queue)")
    p.add_argument("--max-pixels", type=_bounded(int, 1), default=d.max_pixels,
                   help=f"largest input image, width x height (default {d.max_pixels})")
    budget = d.memory_budget_bytes // 2**20 if d.memory_budget_bytes else 0
    p.add_argument("--memory-budget", type=_bounded(int, 0), default=budget, metavar="MIB",
                   help="estimated memory (MiB) the requests running at once may use; a request that does not "
                        f"fit now gets RESOURCE_EXHAUSTED, one that never can INVALID_ARGUMENT (default {budget}; "
                        "0: no limit)")
    p.add_argument("--max-message-mb", type=_bounded(int, 1), default=d.max_message_bytes // 2**20,
                   help=f"largest gRPC message in MiB (default {d.max_message_bytes // 2**20})")
    p.add_argument("--grace", type=_bounded(float, 0), default=d.grace,
                   help=f"seconds in-flight calls get to finish after SIGTERM (default {d.grace:g})")
    p.add_argument("--cpu", action="store_true", help="use the CPU even when CUDA is available")
    p.add_argument("--metrics-port", type=port, metavar="N", help="serve Prometheus metrics at "
                   "http://HOST:N/metrics, HOST being --host (default: off; 0 picks a free port)")
    p.add_argument("--drain-delay", type=_bounded(float, 0), default=d.drain_delay,
                   help="seconds after SIGTERM that health reports NOT_SERVING while new calls get UNAVAILABLE, "
                   f"before stopping (default {d.drain_delay:g}; Ctrl-C skips it)")
    s = p.add_argument_group("security")
    s.add_argument("--tls-cert", metavar="PEM", help="serve TLS with this certificate (chain) and --tls-key")
    s.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")
    s.add_argument("--tls-ca", metavar="PEM", help="require client certificates signed by this CA (mutual TLS)")
    s.add_argument("--token-file", metavar="FILE", help="require 'authorization: Bearer TOKEN' metadata, TOKEN "
                   f"read from FILE (default: ${TOKEN_ENV} if set); health checks need none")
    s.add_argument("--no-reflection", dest="reflection", action="store_false",
                   help="do not serve gRPC server reflection (on by default; needs the token when one is set)")
    p.add_argument("--backend", choices=BACKENDS, default=d.backend,
                   help="auto (default): torch on CUDA for models with NAME.ckpt next to NAME.onnx when torch "
                        "sees a GPU, else onnxruntime; torch also runs on the CPU (for testing)")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="torch on CUDA: compute precision, checked against the .onnx at load (default float16)")
    p.add_argument("--max-batch-size", type=_bounded(int, 1),
                   help=f"dynamic batching: images per batch at most, 1 = off (default {CUDA_MAX_BATCH} for "
                        "models on CUDA, 1 on the CPU)")
    p.add_argument("--max-queue-delay-ms", type=_bounded(float, 0), default=d.max_queue_delay_ms,
                   help=f"dynamic batching: how long a request waits for others (default {d.max_queue_delay_ms:g})")
    p.add_argument("--max-queue", type=_bounded(int, 1), default=d.max_queue,
                   help=f"dynamic batching: requests waiting per model; more get RESOURCE_EXHAUSTED with "
                        f"grpc-retry-pushback-ms (default {d.max_queue})")
    p.add_argument("--stream-window", type=_bounded(int, 1),
                   help=f"frames of one stream in flight, replies in order (default {BATCHED_STREAM_WINDOW} "
                        "with batching, else 1)")
    p.add_argument("--stream-idle-timeout", type=_bounded(float, 0), default=d.stream_idle_timeout, metavar="S",
                   help="cancel a stream with no frame in flight for S seconds, freeing its place (default "
                        f"{d.stream_idle_timeout:g}; 0: never)")
    p.add_argument("--variant", default=d.variant, choices=["auto", "fp32", "int8", "measure"],
                   help="run each model's fp32 NAME.onnx or its NAME.int8.onnx (auto, the default: int8 where "
                        "the file exists and this CPU runs it faster; measure: time both at start-up)")
    p.add_argument("--warm-sizes", type=_size, nargs="+", default=[], metavar="WxH",
                   help="torch on CUDA: sizes whose CUDA graphs are captured at start, e.g. 1280x720 512x512")


def _bounded(kind: Callable[[str], Any], least: float) -> Callable[[str], Any]:
    """argparse type: a number of at least ``least``."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not value >= least:
            raise argparse.ArgumentTypeError(f"must be at least {least:g}, got {text}")
        return value

    return parse


def port(text: str) -> int:
    """argparse type for every port option: 0 to 65535 (0: a free one), checked before anything binds
    (grpc would bind 99999 as 99999 - 65536 without a word)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, got {text!r}")
    return value


def _size(text: str) -> tuple[int, int]:
    """argparse type: "WIDTHxHEIGHT" -> (width, height)."""
    width, sep, height = text.lower().partition("x")
    if not (sep and width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0):
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 1280x720, got {text!r}")
    return int(width), int(height)


def config_from_args(args: argparse.Namespace) -> tuple[str, ServerConfig]:
    """The address to bind and the ``ServerConfig`` that ``add_arguments``'s options describe."""
    from serving.security import read_token

    config = ServerConfig(models_dir=args.models, threads=args.threads, max_concurrent=args.max_concurrent,
                          max_pixels=args.max_pixels, max_message_bytes=args.max_message_mb * 2**20,
                          memory_budget_bytes=args.memory_budget * 2**20 or None,
                          grace=args.grace, providers=["CPUExecutionProvider"] if args.cpu else None,
                          device="cpu" if args.cpu else None, backend=args.backend, precision=args.precision,
                          max_batch_size=args.max_batch_size, max_queue_delay_ms=args.max_queue_delay_ms,
                          max_queue=args.max_queue, stream_window=args.stream_window, warm_sizes=args.warm_sizes,
                          stream_idle_timeout=args.stream_idle_timeout or None)
    config.drain_delay, config.reflection = args.drain_delay, args.reflection
    config.tls_cert, config.tls_key, config.tls_ca = args.tls_cert, args.tls_key, args.tls_ca
    config.token = read_token(args.token_file)
    config.metrics_port = args.metrics_port
    config.variant = args.variant
    return f"{args.host}:{args.port}", config
