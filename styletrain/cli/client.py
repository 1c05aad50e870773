"""``styletrain client``: list a server's styles, or stylize an image with it."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from serving.client import StyleClient


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    styles = sub.add_parser("styles", help="list the server's models and their styles")
    stylize = sub.add_parser("stylize", help="stylize one image on the server")
    for q in (styles, stylize):
        q.add_argument("--server", default="localhost:50051", metavar="HOST:PORT",
                       help="server address (default localhost:50051)")
        q.add_argument("--timeout", type=float, default=60.0, help="deadline in seconds (default 60)")
        q.add_argument("--tls", action="store_true", help="connect with TLS, trusting the system's CAs")
        q.add_argument("--tls-ca", metavar="PEM", help="connect with TLS, trusting the CA in this file")
        q.add_argument("--tls-cert", metavar="PEM", help="client certificate, for servers that require one "
                       "(with --tls-key)")
        q.add_argument("--tls-key", metavar="PEM", help="the client certificate's private key")
        q.add_argument("--token-file", metavar="FILE", help="send the token in FILE as 'authorization: Bearer' "
                       "(default: $STYLETRAIN_TOKEN if set)")
    stylize.add_argument("--input", required=True, metavar="IMG", help="JPEG, PNG or WebP image")
    stylize.add_argument("--output", required=True, metavar="IMG", help="output image; format from the extension")
    choice = stylize.add_mutually_exclusive_group()
    choice.add_argument("--style", metavar="NAME", help="style to apply")
    choice.add_argument("--blend", metavar="NAME=W,...", help="mix of styles by weight, e.g. candy=0.7,mosaic=0.3")
    stylize.add_argument("--model", metavar="NAME", help="model to use (default: the server picks the one "
                         "holding all requested styles with the fewest styles, i.e. a style's dedicated net)")
    stylize.add_argument("--max-side", type=int, help="server shrinks the input so its longer side is at most this")
    stylize.add_argument("--quality", type=int, help="JPEG/WebP quality 1-100 (server default 90)")
    stylize.add_argument("--strength", type=float, help="0 (the photo) to 1 (the full style, default)")
    stylize.add_argument("--preserve-color", action="store_true", help="keep the photo's colours")


def run(args: argparse.Namespace) -> int:
    import grpc

    from serving.client import StyleClient
    from serving.security import read_token
    from styletrain.errors import UserError

    try:
        with StyleClient(args.server, timeout=args.timeout, tls=args.tls, tls_ca=args.tls_ca, tls_cert=args.tls_cert,
                         tls_key=args.tls_key, token=read_token(args.token_file)) as client:
            if args.action == "styles":
                for model in client.list_styles():
                    print(f"{model.name}: {', '.join(model.styles)}")
                return 0
            return _stylize(client, args)
    except grpc.RpcError as exc:
        hint = ""
        if exc.code() == grpc.StatusCode.UNAVAILABLE and "shutting down" not in (exc.details() or ""):
            tls = args.tls or args.tls_ca or args.tls_cert
            hint = " (is `styletrain serve` running there?" + ("" if tls else " If it serves TLS: --tls-ca or --tls")
            hint += ")"
        raise UserError(f"{args.server}: {exc.code().name}: {exc.details()}{hint}") from None


def _stylize(client: StyleClient, args: argparse.Namespace) -> int:
    from pathlib import Path

    from styletrain.errors import UserError
    from styletrain.files import write_atomically
    from styletrain.images import check_output_path
    from styletrain.styles import parse_blend

    output = check_output_path(args.output)
    source = Path(args.input)
    if not source.is_file():
        raise UserError(f"image not found: {source}")
    result = client.stylize(source.read_bytes(), style=args.style,
                            blend=parse_blend(args.blend) if args.blend else None, model=args.model,
                            output_format=output.suffix.lstrip(".").lower(), quality=args.quality,
                            max_side=args.max_side, strength=args.strength, preserve_color=args.preserve_color)
    write_atomically(output, lambda part: part.write_bytes(result.image))
    print(f"wrote {output} ({result.width}x{result.height}, model {result.model}, "
          f"{result.inference_ms:.0f} ms inference, {result.total_ms:.0f} ms on the server)")
    return 0
