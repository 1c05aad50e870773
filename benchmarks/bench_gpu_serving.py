"""GPU serving benchmark: the torch CUDA backend in process, and the gRPC server with batching on and off.

    python benchmarks/bench_gpu_serving.py             # on a CUDA machine: about 3-5 minutes
    python benchmarks/bench_gpu_serving.py --quick     # tiny settings; runs on the CPU in about a minute
    python benchmarks/bench_gpu_serving.py --compile   # also time torch.compile + CUDA graphs (minutes more)

The net is a random-weight ``TransformerNet`` (13 styles, conditional instance norm, width 32, 5
residual blocks, like the shipped ``multistyle`` but twice as wide): timing does not depend on the
weight values. Tables (markdown):

1. In process, images/s at 256/512/1024 px for batches 1, 8 and 32:
   ``plain``: fp32 eager ``TransformerNet`` on tensors already on the device, NCHW, ``inference_mode``;
   ``opt (device)``: ``TorchStylizer.run_tensors`` with the serving defaults (float16 autocast,
   channels_last, a CUDA graph per batch bucket), tensors already on the device;
   ``opt (numpy)``: ``TorchStylizer.run`` on float32 numpy arrays, i.e. what the server gets
   (host copies through pinned buffers included). Target: >= 1000 images/s at 512 px.
2. What each setting gives at 512 px, batch 8 (device tensors).
3. Through gRPC (a ``python -m serving.server --backend torch`` process on 127.0.0.1, clients as
   threads of this process, 512 px JPEG in and out): images/s and p50/p99 latency for 16 and 64
   concurrent clients, batching on (``--max-batch-size 8``, ``--stream-window 4``) vs off
   (``--max-batch-size 1``, ``--stream-window 1``, the server before batching), with the same
   ``--max-concurrent``; p50/p99 latency of one client (batch 1); one 1280x720 JPEG stream:
   frames/s, replies checked to come in request order. Target: >= 60 frames/s.

Needs torch (CUDA for the real figures); never onnxruntime-gpu. The in-process part needs neither
grpc nor onnxruntime. The gRPC part needs the server's packages (grpcio >= 1.85.1,
grpcio-health-checking, grpcio-reflection, googleapis-common-protos, protobuf >= 7.35.1) and
onnx/onnxruntime (CPU) for the export the server loads next to the checkpoint; without them it
prints a skip line. On a machine without them, carry wheels (see /work/.library/device/README.md):
``pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_17_x86_64
-d .whl grpcio==1.85.1 protobuf==7.36.2 grpcio-health-checking==1.85.1 grpcio-reflection==1.85.1
googleapis-common-protos==1.76.0`` and install them with ``pip install --no-index --no-deps
--target /tmp/site .whl/*.whl`` and ``PYTHONPATH=/tmp/site:.`` before running this script.
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from styletrain.checkpoint import save_transformer  # noqa: E402
from styletrain.metadata import ModelMetadata  # noqa: E402
from styletrain.runtime.torch_backend import TorchStylizer  # noqa: E402
from styletrain.transformer import TransformerNet  # noqa: E402
from photos import photo_jpeg  # noqa: E402  (benchmarks/photos.py)


# --- helpers ---------------------------------------------------------------------------------


def throughput(fn: Callable[[], object], images_per_call: int, *, seconds: float, sync: Callable[[], None],
               min_calls: int = 3) -> float:
    """Images/s of ``fn`` over at least ``seconds`` and ``min_calls`` calls, after two warm-up calls
    (the optimised path captures its CUDA graph on the second)."""
    fn()
    fn()
    sync()
    calls, start = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < seconds:
        fn()
        calls += 1
    sync()
    return images_per_call * calls / (time.perf_counter() - start)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def table(header: list[str], rows: list[list[str]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(flush=True)


# --- 1 and 2: in process ---------------------------------------------------------------------


def in_process(net: TransformerNet, meta: ModelMetadata, args: argparse.Namespace, device: torch.device) -> None:
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    n = net.num_styles
    plain = copy.deepcopy(net).to(device).eval()
    rows, best_512 = [], (0.0, 0.0)
    for side in args.sizes:
        stylizer = TorchStylizer(copy.deepcopy(net), meta, device=device, compile=args.compile and cuda)
        for batch in args.batches:
            x = torch.rand(batch, 3, side, side, device=device)
            w = torch.eye(n, device=device)[torch.arange(batch, device=device) % n]
            xs, ws = x.cpu().numpy(), w.cpu().numpy()
            cells = []
            runs = (("plain", functools.partial(plain, x, w)),
                    ("device", functools.partial(stylizer.run_tensors, x, w)),
                    ("numpy", functools.partial(stylizer.run, xs, ws)))
            for name, fn in runs:
                try:
                    with torch.inference_mode():
                        cells.append(throughput(fn, batch, seconds=args.seconds, sync=sync))
                except torch.cuda.OutOfMemoryError:
                    cells.append(float("nan"))
                    torch.cuda.empty_cache()
            plain_ips, device_ips, numpy_ips = cells
            if side == 512:
                best_512 = max(best_512[0], device_ips), max(best_512[1], numpy_ips)
            rows.append([str(side), str(batch), f"{plain_ips:.1f}", f"{device_ips:.1f}", f"{numpy_ips:.1f}",
                         f"{device_ips / plain_ips:.2f}x"])
            print(f"# {side}px batch {batch}: plain {plain_ips:.1f}, opt device {device_ips:.1f}, "
                  f"opt numpy {numpy_ips:.1f} images/s", flush=True)
            del x, w, xs, ws, runs  # free the device memory before the next size
        del stylizer
        if cuda:
            torch.cuda.empty_cache()
    print(f"\n## In process, images/s ({stylizer_settings(device)}; graphs: {'yes' if cuda else 'no (CPU)'})\n")
    table(["size", "batch", "plain fp32 eager", "opt (device tensors)", "opt (numpy in/out)", "opt / plain"], rows)
    if 512 in args.sizes:
        verdict = "met" if best_512[0] >= 1000 else "NOT met"
        print(f"- target >= 1000 images/s at 512 px in process: best {best_512[0]:.0f} (device tensors), "
              f"{best_512[1]:.0f} (numpy in/out): {verdict}\n")
    del plain


def stylizer_settings(device: torch.device) -> str:
    if device.type != "cuda":
        return "opt = TorchStylizer on the CPU: float32 eager, the CPU path"
    return "opt = TorchStylizer defaults: float16 autocast, channels_last, CUDA graphs per batch bucket"


def ablation(net: TransformerNet, meta: ModelMetadata, args: argparse.Namespace, device: torch.device) -> None:
    cuda = device.type == "cuda"
    side, batch = args.ablation_size, args.ablation_batch
    x = torch.rand(batch, 3, side, side, device=device)
    w = torch.eye(net.num_styles, device=device)[torch.arange(batch, device=device) % net.num_styles]
    variants: list[tuple[str, dict]] = [
        ("fp32 eager (plain)", {"precision": "float32", "channels_last": False, "cuda_graphs": False}),
        ("fp16 autocast", {"precision": "float16", "channels_last": False, "cuda_graphs": False}),
        ("fp16 + channels_last", {"precision": "float16", "channels_last": True, "cuda_graphs": False}),
    ]
    if cuda:
        variants += [
            ("fp16 + CUDA graphs", {"precision": "float16", "channels_last": False, "cuda_graphs": True}),
            ("fp16 + channels_last + CUDA graphs (default)", {}),
            ("bf16 + channels_last + CUDA graphs", {"precision": "bfloat16"}),
            ("fp32 (TF32 convs) + channels_last + CUDA graphs", {"precision": "float32"}),
        ]
        if args.compile:
            variants.append(("fp16 + channels_last + torch.compile + CUDA graphs", {"compile": True}))

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    rows, base = [], None
    for name, settings in variants:
        stylizer = TorchStylizer(copy.deepcopy(net), meta, device=device, **settings)
        try:
            start = time.perf_counter()
            ips = throughput(functools.partial(stylizer.run_tensors, x, w), batch, seconds=args.seconds, sync=sync)
            first = time.perf_counter() - start
        except torch.cuda.OutOfMemoryError:
            ips, first = float("nan"), float("nan")
        base = base or ips
        rows.append([name, f"{ips:.1f}", f"{ips / base:.2f}x", f"{first:.1f}"])
        print(f"# {name}: {ips:.1f} images/s", flush=True)
        del stylizer
        if cuda:
            torch.cuda.empty_cache()
    print(f"\n## Settings at {side} px, batch {batch} (device tensors)\n")
    table(["variant", "images/s", "vs fp32 eager", "s incl. warm-up"], rows)


# --- 3: gRPC -----------------------------------------------------------------------------------


class Server:
    """``python -m serving.server`` in its own process (so clients and server do not share a GIL)."""

    def __init__(self, folder: Path, log_path: Path, options: list[str]) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        self.log_path = log_path
        with open(log_path, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "serving.server", "--models", str(folder), "--host", "127.0.0.1",
                 "--port", "0", "--backend", "torch", "--grace", "2", *options],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        deadline = time.monotonic() + 600
        while not (found := re.search(r"StyleTransferService on 127\.0\.0\.1:(\d+)", log_path.read_text())):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the server did not start:\n" + log_path.read_text()[-3000:])
            time.sleep(0.2)
        self.address = f"127.0.0.1:{found.group(1)}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def load(address: str, image: bytes, clients: int, seconds: float) -> dict[str, object]:
    """``clients`` threads calling ``Stylize`` back to back for ``seconds``."""
    import grpc

    from serving.client import StyleClient

    stop_at = time.perf_counter() + seconds

    def client_loop() -> tuple[list[float], Counter, list[int]]:
        latencies, codes, batches = [], Counter(), []
        with StyleClient(address, timeout=60) as client:
            while time.perf_counter() < stop_at:
                start = time.perf_counter()
                try:
                    response = client.stylize(image, style="style0", output_format="jpeg")
                except grpc.RpcError as exc:
                    codes[exc.code().name] += 1
                    continue
                latencies.append(1000 * (time.perf_counter() - start))
                batches.append(response.batch_size)
        return latencies, codes, batches

    start = time.perf_counter()
    with futures.ThreadPoolExecutor(clients) as pool:
        results = [f.result() for f in [pool.submit(client_loop) for _ in range(clients)]]
    elapsed = time.perf_counter() - start
    latencies = [v for r in results for v in r[0]]
    codes = sum((r[1] for r in results), Counter())
    batches = [v for r in results for v in r[2]]
    return {"ips": len(latencies) / elapsed, "p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99),
            "errors": dict(codes), "batch": statistics.fmean(batches) if batches else float("nan")}


def one_client_latency(address: str, image: bytes, requests: int) -> tuple[float, float]:
    from serving.client import StyleClient

    latencies = []
    with StyleClient(address, timeout=60) as client:
        client.stylize(image, style="style0")
        for _ in range(requests):
            start = time.perf_counter()
            client.stylize(image, style="style0", output_format="jpeg")
            latencies.append(1000 * (time.perf_counter() - start))
    return percentile(latencies, 0.5), percentile(latencies, 0.99)


def stream(address: str, frames: list[bytes], count: int) -> tuple[float, bool, int]:
    """One stream of ``count`` frames (cycling through ``frames``): (frames/s, in order, errors)."""
    from serving.client import StyleClient, make_request

    def requests() -> Iterator[tuple[int, object]]:
        for i in range(count):
            yield i, make_request(frames[i % len(frames)], style="style0", output_format="jpeg")

    with StyleClient(address, timeout=600) as client:
        start = time.perf_counter()
        replies = list(client.stream(requests()))
        elapsed = time.perf_counter() - start
    in_order = [r.frame_id for r in replies] == list(range(count))
    errors = sum(r.WhichOneof("result") == "error" for r in replies)
    return count / elapsed, in_order, errors


def through_grpc(net: TransformerNet, meta: ModelMetadata, args: argparse.Namespace, device: torch.device) -> None:
    try:
        import grpc  # noqa: F401

        import serving.client  # noqa: F401
        import serving.server  # noqa: F401  (the server process needs the same packages)
        from styletrain.export import export_net
    except Exception as exc:  # ImportError, or the stubs' RuntimeError for a too old grpcio/protobuf
        print(f"## gRPC: skipped: the server's packages do not import here ({type(exc).__name__}: {exc}); "
              "carry them as wheels, see this script's docstring\n")
        return
    cpu = ["--cpu"] if device.type != "cuda" else []
    stream_w, stream_h = args.stream_size
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "models"
        save_transformer(net, meta, folder / "bench.ckpt")
        try:
            export_net(copy.deepcopy(net), meta, folder / "bench.onnx", check=False)
        except Exception as exc:
            print(f"## gRPC: skipped: could not export the .onnx the server loads ({type(exc).__name__}: {exc})\n")
            return
        image = photo_jpeg(args.grpc_size, args.grpc_size)
        frames = [photo_jpeg(stream_w, stream_h, seed=i) for i in range(8)]
        warm = ["--warm-sizes", f"{args.grpc_size}x{args.grpc_size}", f"{stream_w}x{stream_h}"]
        slots = str(max(args.clients) + args.max_batch)
        configs = {
            "off": ["--max-batch-size", "1", "--stream-window", "1", "--max-concurrent", slots],
            "on": ["--max-batch-size", str(args.max_batch), "--stream-window", str(args.stream_window),
                   "--max-queue-delay-ms", str(args.delay_ms), "--max-queue", slots, "--max-concurrent", slots],
        }
        load_rows, latency_rows, stream_rows = [], [], []
        for label, options in configs.items():
            server = Server(folder, Path(tmp) / f"server-{label}.log", [*options, *warm, *cpu])
            try:
                load(server.address, image, min(args.clients), min(1.0, args.grpc_seconds))  # warm-up
                for clients in args.clients:
                    r = load(server.address, image, clients, args.grpc_seconds)
                    load_rows.append([label, str(clients), f"{r['ips']:.1f}", f"{r['p50']:.1f}", f"{r['p99']:.1f}",
                                      f"{r['batch']:.2f}", str(r["errors"] or "none")])
                    print(f"# gRPC batching {label}, {clients} clients: {r['ips']:.1f} images/s", flush=True)
                p50, p99 = one_client_latency(server.address, image, args.latency_requests)
                latency_rows.append([label, f"{p50:.1f}", f"{p99:.1f}"])
                stream(server.address, frames, min(10, args.stream_frames))  # warm-up
                fps, ordered, errors = stream(server.address, frames, args.stream_frames)
                stream_rows.append([label, options[options.index("--stream-window") + 1], f"{fps:.1f}",
                                    "yes" if ordered else "NO", str(errors)])
                print(f"# gRPC batching {label}: stream {fps:.1f} frames/s", flush=True)
            finally:
                server.stop()
    print(f"\n## Through gRPC, {args.grpc_size} px JPEG, server --backend torch on {device.type} "
          f"(--max-concurrent {slots} in both)\n")
    table(["batching", "clients", "images/s", "p50 ms", "p99 ms", "mean batch", "errors"], load_rows)
    print("## One client, sequential requests (batch 1)\n")
    table(["batching", "p50 ms", "p99 ms"], latency_rows)
    print(f"## One {stream_w}x{stream_h} stream, {args.stream_frames} frames\n")
    table(["batching", "stream window", "frames/s", "in order", "errors"], stream_rows)
    best = max(float(r[2]) for r in stream_rows)
    if (stream_w, stream_h) == (1280, 720):
        print(f"- target >= 60 frames/s for one 720p stream: best {best:.1f}: {'met' if best >= 60 else 'NOT met'}\n")


# --- main ------------------------------------------------------------------------------------


def size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    return int(width), int(height)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings that finish on a CPU in about a minute")
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=1.0, help="timed seconds per in-process cell")
    parser.add_argument("--styles", type=int, default=13)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--residuals", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (+ graphs)")
    parser.add_argument("--ablation-size", type=int, default=512)
    parser.add_argument("--ablation-batch", type=int, default=8)
    parser.add_argument("--grpc-size", type=int, default=512)
    parser.add_argument("--clients", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--grpc-seconds", type=float, default=5.0)
    parser.add_argument("--latency-requests", type=int, default=200)
    parser.add_argument("--max-batch", type=int, default=8, help="server --max-batch-size with batching on")
    parser.add_argument("--delay-ms", type=float, default=2.0, help="server --max-queue-delay-ms")
    parser.add_argument("--stream-window", type=int, default=4, help="server --stream-window with batching on")
    parser.add_argument("--stream-size", type=size, default=(1280, 720), metavar="WxH")
    parser.add_argument("--stream-frames", type=int, default=300)
    parser.add_argument("--skip", nargs="*", default=[], choices=["inprocess", "ablation", "grpc"])
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.batches, args.seconds = [32, 64], [1, 2], 0.2
        args.styles, args.width, args.residuals = 3, 8, 1
        args.ablation_size, args.ablation_batch = 32, 2
        args.grpc_size, args.clients, args.grpc_seconds, args.latency_requests = 48, [2, 4], 1.0, 5
        args.max_batch, args.stream_size, args.stream_frames = 4, (64, 48), 8

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else "none (CPU run: GPU figures not measured)"
    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
          f"torch {torch.__version__}, GPU: {gpu}, load average {os.getloadavg()[0]:.1f}")
    torch.manual_seed(0)
    net = TransformerNet(args.styles, width=args.width, num_residuals=args.residuals).eval()
    meta = ModelMetadata(style_names=[f"style{i}" for i in range(args.styles)])
    print(f"# net: {net.config()}, random weights (timing does not depend on them)"
          f"{'; --quick: tiny settings, not a measurement' if args.quick else ''}\n", flush=True)
    started = time.perf_counter()
    if "inprocess" not in args.skip:
        in_process(net, meta, args, device)
    if "ablation" not in args.skip:
        ablation(net, meta, args, device)
    if "grpc" not in args.skip:
        through_grpc(net, meta, args, device)
    print(f"# total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
