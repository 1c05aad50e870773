"""``styletrain serve``: serve every exported ``.onnx`` model in a folder over gRPC (onnxruntime, or
torch on CUDA from the ``.ckpt`` beside it; ``--backend``), with optional dynamic batching."""

from __future__ import annotations

import argparse

from serving.config import add_arguments

__all__ = ["add_arguments", "run"]


def run(args: argparse.Namespace) -> int:
    import logging

    from serving.config import config_from_args
    from serving.server import serve

    # The server logs under "serving": show it the way the CLI shows "styletrain" logs.
    ours, server_log = logging.getLogger("styletrain"), logging.getLogger("serving")
    handlers = [handler for handler in ours.handlers if handler not in server_log.handlers]
    for handler in handlers:
        server_log.addHandler(handler)
    server_log.setLevel(ours.level)
    try:
        serve(*config_from_args(args))
    finally:  # main() removes its handler from "styletrain" after the call: here too
        for handler in handlers:
            server_log.removeHandler(handler)
    return 0
