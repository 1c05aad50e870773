"""Peak and resident memory of the gRPC server: a bomb-like WebP, two requests at the pixel limit,
and many requests of random sizes; this code against an older revision, each a real server process.

    python benchmarks/bench_memory.py                      # this tree only
    python benchmarks/bench_memory.py --old-rev 92c7415    # also the server as of that commit
    python benchmarks/bench_memory.py --breakdown 2000     # where a whole-image request's memory goes
    python benchmarks/bench_memory.py --peaks 4000         # single steps against their estimates

Servers run ``python -m serving.server --models checkpoints`` (every shipped model) on 127.0.0.1
with the default settings; an old revision runs from ``git archive`` in a temporary folder. Memory
is the server process's RSS from /proc/PID/status; a peak is VmHWM after resetting it
(``/proc/PID/clear_refs``) just before the case, given over the RSS at that moment. Cases:

- ``bomb``: one 2000x2000 flat WebP (lossless: about 200 bytes), what the outside probe sent;
- ``limit``: two 4000x4000 (16 Mpx, the default ``--max-pixels``) JPEGs at once (skipped for old
  revisions: a whole-image run needs ~7 GiB each; the table gives the bytes-per-pixel projection);
- ``random``: 60 JPEGs of random sides (128-1280 px, same seed for every server); RSS after 10/30/60.

``--breakdown SIDE`` runs the steps of one request in this process on a flat SIDE x SIDE WebP, old
and new, and prints each step's peak over the RSS before it, in MiB and bytes per pixel.
``--peaks SIDE`` measures single steps in this process against the estimates that admission and
``stylize`` use: decoding an RGB and a 16-bit grayscale PNG and a staged ``mosaic.onnx`` run at SIDE,
and torch runs on the CPU at 1024 px (``mosaic.ckpt``, an untrained width-16 net, and an identity
module that leaves only the host copies).
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from photos import photo_jpeg  # benchmarks/photos.py

REPO = Path(__file__).resolve().parents[1]
MIB = 2**20


def status(pid: int | str, key: str) -> int:
    """A /proc/PID/status memory line in bytes (VmRSS, VmHWM)."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))


def reset_peak(pid: int | str) -> None:
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def flat_webp(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (200, 40, 30)).save(buffer, format="WEBP", lossless=True)
    return buffer.getvalue()


@dataclass
class Server:
    """A server process and a client for it."""

    process: subprocess.Popen
    address: str
    label: str


@contextmanager
def server(tree: Path, label: str, models: Path) -> Iterator[Server]:
    """``python -m serving.server`` from ``tree`` on a free port, stopped on exit."""
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "serving.server", "--models", str(models),
                                "--host", "127.0.0.1", "--port", "0"], cwd=tree, env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        # the service is StyleTransferService since the proto's review; older revisions say StyleTransfer
        while not (started := re.search(r"StyleTransfer(?:Service)? on 127\.0\.0\.1:(\d+)",
                                        text := Path(log.name).read_text())):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{label} server did not start:\n{text}")
            time.sleep(0.2)
        port = started.group(1)
        yield Server(process, f"127.0.0.1:{port}", label)
    finally:
        process.terminate()
        process.wait(60)
        log.close()
        os.unlink(log.name)


def stylize(address: str, image: bytes, style: str = "mosaic") -> str:
    """One request; its status code name."""
    import grpc

    from serving.client import StyleClient

    with StyleClient(address, timeout=3600) as client:
        try:
            client.stylize(image, style=style, output_format="jpeg")
            return "OK"
        except grpc.RpcError as exc:
            return f"{exc.code().name}: {exc.details()[:120]}"


def peak_during(srv: Server, work: Callable[[], object]) -> tuple[int, int, float, object]:
    """(RSS before, peak over it, seconds, result of ``work``) for the server process."""
    pid = srv.process.pid
    before = status(pid, "VmRSS")
    reset_peak(pid)
    start = time.perf_counter()
    result = work()
    return before, status(pid, "VmHWM") - before, time.perf_counter() - start, result


def case_bomb(srv: Server) -> list[str]:
    data = flat_webp(2000)
    before, peak, seconds, code = peak_during(srv, lambda: stylize(srv.address, data))
    return [f"| {srv.label} | bomb: 2000x2000 flat WebP ({len(data)} B) | {before / MIB:.0f} | "
            f"+{peak / MIB:.0f} ({peak / 2000**2:.0f} B/px) | {seconds:.1f} s, {code} |"]


def case_limit(srv: Server) -> list[str]:
    data = [photo_jpeg(4000, 4000, seed, block=16) for seed in (1, 2)]

    def two() -> list[str]:
        with futures.ThreadPoolExecutor(2) as pool:
            return list(pool.map(lambda d: stylize(srv.address, d), data))

    before, peak, seconds, codes = peak_during(srv, two)
    return [f"| {srv.label} | 2 x 4000x4000 JPEG at once (16 Mpx each) | {before / MIB:.0f} | "
            f"+{peak / MIB:.0f} (peak {(before + peak) / MIB:.0f} MiB) | {seconds:.0f} s, {', '.join(codes)} |"]


def case_random(srv: Server) -> list[str]:
    rng = np.random.default_rng(7)
    sizes = [tuple(int(s) for s in rng.integers(128, 1281, size=2)) for _ in range(60)]
    pid = srv.process.pid
    start_rss, marks, codes = status(pid, "VmRSS"), {}, []
    reset_peak(pid)
    start = time.perf_counter()
    for i, (w, h) in enumerate(sizes, 1):
        codes.append(stylize(srv.address, photo_jpeg(w, h, seed=i, block=16), style=("mosaic", "candy")[i % 2]))
        if i in (10, 30, 60):
            marks[i] = status(pid, "VmRSS")
    ok = sum(c == "OK" for c in codes)
    return [f"| {srv.label} | 60 random sizes 128-1280 px: RSS after 10 / 30 / 60 | {start_rss / MIB:.0f} | "
            f"{' / '.join(f'{marks[i] / MIB:.0f}' for i in (10, 30, 60))} (peak {status(pid, 'VmHWM') / MIB:.0f}) | "
            f"{time.perf_counter() - start:.0f} s, {ok}/60 OK |"]


def old_tree(rev: str, folder: Path) -> Path:
    """``serving`` and ``styletrain`` as of ``rev``, extracted into ``folder``."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "serving", "styletrain"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def breakdown(side: int, model: Path) -> None:
    """Each step of one request on a flat side x side WebP, in this process: old steps, then new ones."""
    from serving import pipeline
    from styletrain.images import encode_image, open_image
    from styletrain.runtime.malloc import release_freed_memory
    from styletrain.runtime.onnx_backend import OnnxStylizer

    pixels = side * side
    data = flat_webp(side)
    me = os.getpid()

    def step(name: str, fn: Callable[[], object]) -> object:
        before = status(me, "VmRSS")
        reset_peak(me)
        out = fn()
        peak = status(me, "VmHWM") - before
        print(f"| {name} | +{peak / MIB:.0f} | {peak / pixels:.0f} |", flush=True)
        return out

    weights = np.zeros(13, np.float32)
    weights[4] = 1.0
    print(f"\nSteps of one request, {side}x{side} flat WebP ({len(data)} B), {model.name}, peak over the RSS "
          "before the step:\n\n| step | peak MiB | bytes/pixel |\n|---|---|---|")
    def old_steps(arena: bool) -> None:
        stylizer = OnnxStylizer(model, memory_arena=arena, staging=None)
        stylizer.warm_up()
        w = weights[:len(stylizer.style_names)] if stylizer.conditional else np.ones(1, np.float32)
        image = step("old: decode (open_image)", lambda: open_image(data))
        # the old conversions, as they were: float32 copy, divide, transpose copy
        batch = step("old: PIL -> float32 NCHW (3 copies)", lambda: np.ascontiguousarray(
            (np.asarray(image, dtype=np.float32) / 255.0).transpose(2, 0, 1)[None]))
        label = "arena + shrinkage (the default)" if arena else "no arena"
        out = step(f"old: onnxruntime whole-image run, {label}", lambda: stylizer.run(batch, w))
        step("old: float32 -> PIL (clip, scale copies)", lambda: Image.fromarray(
            (np.clip(np.nan_to_num(out[0], nan=0.0), 0, 1).transpose(1, 2, 0) * 255.0 + 0.5).astype(np.uint8)))

    old_steps(arena=True)
    old_steps(arena=False)
    release_freed_memory()
    stylizer = OnnxStylizer(model)
    stylizer.warm_up()
    w = weights[:len(stylizer.style_names)] if stylizer.conditional else np.ones(1, np.float32)
    selection = pipeline.Selection(model.stem, stylizer, w)
    px = step("new: decode to uint8 pixels (pipeline.decode)",
              lambda: pipeline.decode(data, max_pixels=64_000_000, min_side=16, max_side=None))
    from styletrain.runtime import RunOptions

    result, _ = step("new: run_pixels, staged (uint8 in and out)", lambda: pipeline.run(selection, px, RunOptions()))
    step("new: encode JPEG", lambda: encode_image(result, "JPEG"))
    print(f"\nnew estimate for this size (Stylizer.memory_bytes): {stylizer.memory_bytes(side, side) / MIB:.0f} MiB")


PEAK_CASES = ("decode RGB PNG", "decode 16-bit grey PNG", "mosaic.onnx run_pixels (staged above 1 Mpx)",
              "torch mosaic.ckpt (width 32)", "torch width 16, untrained", "torch identity (host copies only)")


def peak_case(case: str, side: int, models: Path) -> tuple[int, str]:
    """One step's peak over the RSS before it, in a fresh process (``peaks``), and its estimate in
    bytes per pixel: what admission (decode, staged) or ``stylize`` (torch) charges it."""
    import torch

    from serving import pipeline
    from styletrain.checkpoint import load_transformer
    from styletrain.runtime.malloc import release_freed_memory
    from styletrain.runtime.onnx_backend import OnnxStylizer
    from styletrain.runtime.base import HOST_COPY_BYTES_PER_PIXEL
    from styletrain.runtime.torch_backend import TorchStylizer
    from styletrain.transformer import TransformerNet

    rng = np.random.default_rng(0)
    weights = np.ones(1, np.float32)
    if case.startswith("decode"):
        image = (Image.fromarray(rng.integers(0, 65536, (side, side), dtype=np.uint16)) if "16-bit" in case
                 else Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = buffer.getvalue()
        work: Callable[[], object] = lambda: pipeline.decode(data, max_pixels=64_000_000, min_side=16, max_side=None)  # noqa: E731
        estimate = "24 (every codec)"
    else:
        pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        if case.startswith("mosaic.onnx"):
            stylizer = OnnxStylizer(models / "mosaic.onnx")
        else:
            class Identity(torch.nn.Module):
                def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
                    return x.clone()

            net, meta = load_transformer(models / "mosaic.ckpt")
            module = {"torch mosaic.ckpt (width 32)": net, "torch width 16, untrained": TransformerNet(1, width=16),
                      "torch identity (host copies only)": Identity()}[case]
            stylizer = TorchStylizer(module, meta)  # type: ignore[arg-type]
        stylizer.run_pixels(pixels[:64, :64], weights)
        work = lambda: stylizer.run_pixels(pixels, weights)  # noqa: E731
        estimate = (f"{HOST_COPY_BYTES_PER_PIXEL} on CUDA" if "identity" in case
                    else f"{stylizer.memory_bytes(side, side) / side**2:.0f}")
    me = os.getpid()
    release_freed_memory()
    before = status(me, "VmRSS")
    reset_peak(me)
    work()
    return status(me, "VmHWM") - before, estimate


def peaks(side: int, models: Path, torch_side: int = 1024) -> None:
    """Each step of ``PEAK_CASES`` in its own fresh process (freed memory that one step leaves in the heap
    would hide the next one's peak): decoding and a staged run at ``side``, torch on the CPU at ``torch_side``."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    print("\n| step | size | peak MiB | bytes/pixel | estimate (bytes/pixel) |\n|---|---|---|---|---|", flush=True)
    for case in PEAK_CASES:
        size = torch_side if case.startswith("torch") else side
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            used, estimate = pool.submit(peak_case, case, size, models).result()
        print(f"| {case} | {size} | {used / MIB:.0f} | {used / size**2:.1f} | {estimate} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-rev", help="also measure the server as of this git revision")
    parser.add_argument("--cases", default="bomb,limit,random", help="comma-separated: bomb, limit, random")
    parser.add_argument("--models", type=Path, default=REPO / "checkpoints")
    parser.add_argument("--breakdown", type=int, metavar="SIDE", help="only the per-step breakdown at this side")
    parser.add_argument("--peaks", type=int, metavar="SIDE", help="only single steps against their estimates: "
                        "decoding and a staged run at SIDE, torch runs on the CPU at 1024")
    args = parser.parse_args()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    print(f"# {cpu}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, Python {platform.python_version()}")
    if args.breakdown:
        breakdown(args.breakdown, args.models / "multistyle.onnx")
        return
    if args.peaks:
        peaks(args.peaks, args.models)
        return
    cases = {"bomb": case_bomb, "limit": case_limit, "random": case_random}
    rows = ["| server | case | RSS before (MiB) | peak over it (MiB) / RSS (MiB) | time, result |",
            "|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        trees = [(REPO, "new")]
        if args.old_rev:
            trees.insert(0, (old_tree(args.old_rev, Path(tmp)), f"old ({args.old_rev})"))
        for tree, label in trees:
            with server(tree, label, args.models) as srv:
                print(f"# {label}: started, RSS {status(srv.process.pid, 'VmRSS') / MIB:.0f} MiB", flush=True)
                for name in args.cases.split(","):
                    if name == "limit" and label != "new":
                        rows.append(f"| {label} | limit: skipped (two whole-image runs need ~2 x 7 GiB) | | | |")
                        continue
                    rows += cases[name](srv)
                    print(rows[-1], flush=True)
    print("\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
