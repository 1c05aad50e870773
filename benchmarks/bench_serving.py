"""Latency and throughput of torch eager, onnxruntime in process, and the gRPC server over loopback.

    python benchmarks/bench_serving.py                       # random-weight 13-style net, width 32
    python benchmarks/bench_serving.py --width 16 --sizes 256 512
    python benchmarks/bench_serving.py --checkpoint runs/multistyle/last.ckpt

Random weights are fine for timing (the work per pixel does not depend on the values). Each size
runs every backend ``--repeats`` times after a warm-up run, one image at a time (batch 1):
p50/p95 latency in ms and throughput in images/s (1 / mean latency). Columns:

- ``torch``: ``TransformerNet`` in eager fp32 under ``inference_mode`` (CUDA too when available);
- ``ort``: ``OnnxStylizer.run`` on a ready float array (inference only);
- ``ort+codec``: what the server does per request, in process: decode JPEG, run, encode JPEG;
- ``grpc``: ``StyleClient.stylize`` against a server on 127.0.0.1 (same JPEG, same work + transport).

The server here is ``create_server`` in this process, so each session has its own onnxruntime
thread pool; ``styletrain serve`` shares one (``benchmarks/bench_thread_pool.py`` compares the two).

``--memory`` also reports the RSS of an onnxruntime session after runs at many sizes, with the
CPU memory arena on and off (fresh process each).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from photos import photo_jpeg  # benchmarks/photos.py


def timings(fn: Callable[[], object], repeats: int) -> list[float]:
    """Milliseconds of ``repeats`` calls after one warm-up call."""
    fn()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def summary(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50": statistics.median(ordered), "p95": p95, "ips": 1000 / statistics.fmean(ordered)}


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def rss_probe(model: str, arena: str, sizes: int) -> None:
    """Child process: RSS after runs at ``sizes`` different image sizes (prints JSON).

    ``arena``: "off" (no CPU arena), "on" (onnxruntime's default: the arena only grows), or
    "shrink" (styletrain's default: arena shrunk after every run, ``memory.enable_memory_arena_shrinkage``).
    """
    from styletrain.runtime.onnx_backend import OnnxStylizer

    stylizer = OnnxStylizer(model, providers=["CPUExecutionProvider"], memory_arena=arena != "off",
                            shrink_arena=arena == "shrink")
    weights = np.full(len(stylizer.style_names), 1 / len(stylizer.style_names), dtype=np.float32)
    rng = np.random.default_rng(0)
    stylizer.run(np.zeros((1, 3, 256, 256), np.float32), weights)
    start = rss_mb()
    peak = start
    for _ in range(sizes):
        h, w = rng.integers(200, 700, size=2)
        stylizer.run(np.zeros((1, 3, h, w), np.float32), weights)
        peak = max(peak, rss_mb())
    print(json.dumps({"after_first": start, "end": rss_mb(), "peak": peak}))


def make_model(args: argparse.Namespace, folder: Path) -> tuple[object, Path]:
    """The torch net and its ONNX export (random weights unless --checkpoint)."""
    from styletrain.checkpoint import load_transformer
    from styletrain.export import export_net
    from styletrain.metadata import ModelMetadata
    from styletrain.transformer import TransformerNet

    if args.checkpoint:
        net, meta = load_transformer(args.checkpoint)
    else:
        net = TransformerNet(args.styles, width=args.width, num_residuals=args.residuals).eval()
        meta = ModelMetadata(style_names=[f"style{i}" for i in range(args.styles)])
    path = export_net(net, meta, folder / "bench.onnx", check=True)
    return net, path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per size and backend (3 at >= 1024)")
    parser.add_argument("--checkpoint", help="time this trained checkpoint instead of a random net")
    parser.add_argument("--styles", type=int, default=13)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--residuals", type=int, default=5)
    parser.add_argument("--threads", type=int, help="onnxruntime intra-op threads (default: one per core)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["torch", "ort", "codec", "grpc"])
    parser.add_argument("--memory", action="store_true", help="also measure RSS over many sizes")
    parser.add_argument("--rss-probe", nargs=2, metavar=("MODEL", "ARENA"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_probe:
        rss_probe(args.rss_probe[0], args.rss_probe[1], sizes=20)
        return

    import onnxruntime as ort
    import torch

    from serving.client import StyleClient
    from serving.server import ServerConfig, create_server
    from styletrain.images import array_to_image, encode_image, image_to_array, open_image
    from styletrain.runtime.onnx_backend import OnnxStylizer

    cuda = torch.cuda.is_available()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), onnxruntime {ort.__version__} {ort.get_available_providers()}, "
          f"CUDA: {torch.cuda.get_device_name() if cuda else 'none'}; load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        net, model = make_model(args, Path(tmp))
        print(f"# net: {net.config()}, {'checkpoint ' + args.checkpoint if args.checkpoint else 'random weights'}")
        stylizer = OnnxStylizer(model, threads=args.threads)
        print(f"# onnxruntime providers: {stylizer.providers}")
        n = len(stylizer.style_names)
        weights = np.eye(n, dtype=np.float32)[0]
        wt = torch.from_numpy(weights)[None]
        config = ServerConfig(threads=args.threads, max_concurrent=1)
        server, port = create_server("127.0.0.1:0", Path(tmp), config=config)
        server.start()
        client = StyleClient(f"127.0.0.1:{port}", timeout=600)
        rows = []
        try:
            for side in args.sizes:
                repeats = args.repeats if side < 1024 else min(args.repeats, 3)
                image = photo_jpeg(side, side)
                x = image_to_array(open_image(image))
                results: dict[str, dict[str, float]] = {}
                if "torch" not in args.skip:
                    xt = torch.from_numpy(x)
                    with torch.inference_mode():
                        results["torch"] = summary(timings(lambda: net(xt, wt), repeats))
                        if cuda:
                            gnet, gx = net.cuda(), xt.cuda()
                            gw = wt.cuda() if wt is not None else None

                            def on_gpu() -> None:
                                gnet(gx, gw)
                                torch.cuda.synchronize()

                            results["torch-cuda"] = summary(timings(on_gpu, max(repeats, 10)))
                            net.cpu()
                if "ort" not in args.skip:
                    results["ort"] = summary(timings(lambda: stylizer.run(x, weights), repeats))
                if "codec" not in args.skip:
                    def pipeline() -> bytes:
                        output = stylizer.run(image_to_array(open_image(image)), weights)
                        return encode_image(array_to_image(output), "JPEG", quality=90)

                    results["ort+codec"] = summary(timings(pipeline, repeats))
                if "grpc" not in args.skip:
                    results["grpc"] = summary(timings(lambda: client.stylize(image, style="style0" if n > 1 else None,
                                                                             output_format="jpeg"), repeats))
                rows.append((side, repeats, results))
                line = "  ".join(f"{k} p50 {v['p50']:.0f} ms" for k, v in results.items())
                print(f"# {side}px x{repeats}: {line}", flush=True)
        finally:
            client.close()
            server.stop(0).wait(10)

        backends = list(rows[0][2])
        print("\n| size | runs | " + " | ".join(f"{b} p50 / p95 ms (img/s)" for b in backends) + " |")
        print("|---|---|" + "---|" * len(backends))
        for side, repeats, results in rows:
            cells = [f"{r['p50']:.0f} / {r['p95']:.0f} ({r['ips']:.2f})" for r in results.values()]
            print(f"| {side} | {repeats} | " + " | ".join(cells) + " |")
        for side, _, results in rows:
            notes = []
            if "torch" in results and "ort" in results:
                notes.append(f"ort speed-up vs torch eager: {results['torch']['p50'] / results['ort']['p50']:.2f}x")
            if "grpc" in results and "ort+codec" in results:
                over = results["grpc"]["p50"] / results["ort+codec"]["p50"] - 1
                notes.append(f"gRPC overhead vs in-process pipeline: {100 * over:+.1f}%")
            if "grpc" in results and "ort" in results:
                notes.append(f"vs inference only: {100 * (results['grpc']['p50'] / results['ort']['p50'] - 1):+.1f}%")
            print(f"- {side}px: " + "; ".join(notes))
        if not cuda:
            print("- GPU: not measured (no CUDA device in this session)")

        if args.memory:
            for arena in ("off", "on", "shrink"):
                probe = subprocess.run([sys.executable, __file__, "--rss-probe", str(model), arena],
                                       capture_output=True, text=True, check=True)
                rss = json.loads(probe.stdout.strip().splitlines()[-1])
                print(f"- RSS, CPU arena {arena}, 20 sizes 200-700 px: after first run {rss['after_first']:.0f} MB, "
                      f"peak {rss['peak']:.0f} MB, end {rss['end']:.0f} MB")


if __name__ == "__main__":
    main()
