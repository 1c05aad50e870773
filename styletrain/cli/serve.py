"""``styletrain serve``: serve every exported ``.onnx`` model in a folder over gRPC."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    # Defaults mirror serving.server.ServerConfig (not imported here, to keep --help fast).
    p.add_argument("--models", default="checkpoints", metavar="DIR",
                   help="folder of .onnx models exported with `styletrain export` (default: checkpoints)")
    p.add_argument("--port", type=int, default=50051, help="TCP port (default 50051; 0 picks a free one)")
    p.add_argument("--host", default="[::]", help="address to bind (default [::], all interfaces)")
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads per model (default: one per core)")
    p.add_argument("--max-concurrent", type=int, default=2,
                   help="inference calls run at once; more get RESOURCE_EXHAUSTED (default 2)")
    p.add_argument("--max-pixels", type=int, default=16_000_000,
                   help="largest input image, width x height (default 16000000)")
    p.add_argument("--max-message-mb", type=int, default=32, help="largest gRPC message in MiB (default 32)")
    p.add_argument("--grace", type=float, default=10.0,
                   help="seconds in-flight calls get to finish after SIGTERM (default 10)")
    p.add_argument("--cpu", action="store_true", help="use the CPU even when CUDA is available")


def run(args: argparse.Namespace) -> int:
    import logging

    from serving.server import ServerConfig, serve

    # The server logs under "serving": show it the way the CLI shows "styletrain" logs.
    ours, server_log = logging.getLogger("styletrain"), logging.getLogger("serving")
    for handler in ours.handlers:
        server_log.addHandler(handler)
    server_log.setLevel(ours.level)

    config = ServerConfig(models_dir=args.models, threads=args.threads, max_concurrent=args.max_concurrent,
                          max_pixels=args.max_pixels, max_message_bytes=args.max_message_mb * 1024 * 1024,
                          grace=args.grace, providers=["CPUExecutionProvider"] if args.cpu else None)
    serve(f"{args.host}:{args.port}", config)
    return 0
