"""``styletrain demo``: a browser page for a running server: photo or webcam, model, weight sliders."""

from __future__ import annotations

import argparse

from serving.config import port
from styletrain.cli._args import positive


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", default="localhost:50051", metavar="HOST:PORT",
                   help="the `styletrain serve` gRPC server (default localhost:50051)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address of the web page (default 127.0.0.1, this machine only; 0.0.0.0: all interfaces)")
    p.add_argument("--port", type=port, default=7860, help="port of the web page (default 7860)")
    p.add_argument("--timeout", type=positive(float), default=60.0,
                   help="deadline of each call in seconds (default 60)")


def run(args: argparse.Namespace) -> int:
    from serving.demo import import_gradio, launch

    import_gradio()  # before anything else: without the extra, one line saying how to install it
    launch(args.server, host=args.host, port=args.port, timeout=args.timeout)
    return 0
