"""Large images on the CPU: reduced JPEG decoding, staged runs on the exported vs the rewritten graph,
and a whole-image run's peak memory against the server's estimate. Prints markdown tables.

    python benchmarks/bench_large_images.py [--models checkpoints] [--threads 1] [--only decode scans ...]

- decode: a 4000x3000 JPEG (smooth noise) for 1024 px, decoded in full then shrunk, vs decoded at
  reduced scale (``open_image(reduce_to=...)``, what the server does); best of 5, and the mean
  |diff| of the two results;
- scans: a 2000x2000 progressive JPEG with empty scans added (a hostile file), decoded by Pillow
  directly vs refused by ``open_image`` (more than ``MAX_JPEG_SCANS``), best of 3;
- staged: one 1201x1100 image (above the 1 Mpx staging threshold) per model, whole-image vs staged
  with the stages cut from the exported graph (before) and from the CPU-rewritten graph (now);
- memory: each model's whole-image run at 1000x1000 in a fresh process, peak RSS growth per pixel
  (VmHWM) against ``Stylizer.memory_bytes`` (what the server charges).
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from photos import photo_jpeg  # benchmarks/photos.py

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from styletrain.errors import UserError  # noqa: E402
from styletrain.images import open_image, resize_max_side  # noqa: E402
from styletrain.runtime.onnx_backend import OnnxStylizer  # noqa: E402
from styletrain.runtime.variants import variant_files  # noqa: E402

PEAK_SCRIPT = """
import sys, numpy as np
from styletrain.runtime.onnx_backend import OnnxStylizer
s = OnnxStylizer(sys.argv[1], threads=int(sys.argv[2]), staging=None)
w = np.full(len(s.style_names), 1 / len(s.style_names), np.float32)
s.run_pixels(np.zeros((64, 64, 3), np.uint8), w)
big = np.random.default_rng(0).integers(0, 256, (1000, 1000, 3), dtype=np.uint8)
def hwm():
    return next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmHWM'))
open('/proc/self/clear_refs', 'w').write('5')
before = hwm()
s.run_pixels(big, w)
print(hwm() - before, OnnxStylizer(sys.argv[1], threads=1).memory_bytes(1000, 1000))
"""


def best_of(fn, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def decode(side: int) -> None:
    data = photo_jpeg(4000, 3000, block=10)
    full = lambda: resize_max_side(open_image(data), side)  # noqa: E731
    reduced = lambda: resize_max_side(open_image(data, reduce_to=side), side)  # noqa: E731
    diff = np.abs(np.asarray(full(), dtype=float) - np.asarray(reduced(), dtype=float)).mean()
    print(f"\n## Decoding a 4000x3000 JPEG ({len(data) / 1e6:.1f} MB) for {side} px, best of 5\n")
    print("| decode | ms |\n|---|---|")
    print(f"| full, then shrink | {best_of(full) * 1000:.0f} |")
    print(f"| reduced scale (`reduce_to`), then shrink | {best_of(reduced) * 1000:.0f} |")
    print(f"\nmean |diff| between the two results: {diff:.2f}/255")


def scans() -> None:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(photo_jpeg(2000, 2000, block=10))).save(buffer, format="JPEG", progressive=True)
    data = buffer.getvalue()
    last = data.rfind(b"\xff\xda")
    header = data[last:last + 2 + int.from_bytes(data[last + 2:last + 4], "big")]
    end = data.rfind(b"\xff\xd9")
    print("\n## A 2000x2000 progressive JPEG with empty scans added, best of 3\n")
    print("| scans | file (MB) | Pillow decode (ms) | `open_image` (ms) |\n|---|---|---|---|")
    for extra in (0, 100, 1000):
        hostile = data[:end] + header * extra + data[end:]

        def guarded() -> None:
            try:
                open_image(hostile)
            except UserError:  # refused before decoding
                pass

        pillow = best_of(lambda: Image.open(io.BytesIO(hostile)).load(), runs=3)
        count = hostile.count(b"\xff\xda")
        print(f"| {count} | {len(hostile) / 1e6:.2f} | {pillow * 1000:.0f} | "
              f"{best_of(guarded, runs=3) * 1000:.0f} |")


def staged(models: list[Path], threads: int) -> None:
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (1100 // 8 + 1, 1201 // 8 + 1, 3), dtype=np.uint8)
    pixels = np.ascontiguousarray(small.repeat(8, 0).repeat(8, 1)[:1100, :1201])
    print(f"\n## Staged runs, 1201x1100 px, {threads} thread(s), one run each after a warm-up\n")
    print("| model | whole image (s) | staged, exported graph (s) | staged, rewritten graph (s) "
          "| max / mean \\|diff\\| to whole (now) |")
    print("|---|---|---|---|---|")
    for path in models:
        whole = OnnxStylizer(path, threads=threads, staging=None)
        before = OnnxStylizer(path, threads=threads)
        before._model = OnnxStylizer(path, threads=threads, cpu_rewrite=False)._model  # plan as before
        now = OnnxStylizer(path, threads=threads)
        weights = np.full(len(whole.style_names), 1 / len(whole.style_names), np.float32)
        times, outputs = [], []
        for stylizer in (whole, before, now):
            stylizer.run_pixels(pixels, weights)  # warm-up: builds the stage sessions
            start = time.perf_counter()
            outputs.append(stylizer.run_pixels(pixels, weights))
            times.append(time.perf_counter() - start)
        diff = np.abs(outputs[2].astype(int) - outputs[0].astype(int))
        print(f"| `{path.stem}` | {times[0]:.2f} | {times[1]:.2f} | {times[2]:.2f} "
              f"| {diff.max()} / {diff.mean():.3f} |")


def memory(models: list[Path], threads: int) -> None:
    print("\n## Whole-image run at 1000x1000, fresh process: peak growth vs the server's charge\n")
    print("| model | measured B/px | charged B/px |\n|---|---|---|")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for path in models:
        out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(path), str(threads)], capture_output=True,
                             text=True, check=True, env=env).stdout.split()
        measured, charged = (int(v) / 1e6 for v in out)
        print(f"| `{path.stem}` | {measured:.0f} | {charged:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=ROOT / "checkpoints")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--side", type=int, default=1024, help="longer side the JPEG is decoded for")
    parser.add_argument("--only", nargs="+", choices=("decode", "scans", "staged", "memory"),
                        default=["decode", "scans", "staged", "memory"], help="tables to print (default: all)")
    args = parser.parse_args()
    models = list(variant_files(args.models))
    flags = next((line for line in open("/proc/cpuinfo") if line.startswith("flags")), "")
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if f" {f}" in flags]
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, flags: {', '.join(isa)}; "
          f"models from {args.models}")
    if "decode" in args.only:
        decode(args.side)
    if "scans" in args.only:
        scans()
    if "staged" in args.only:
        staged(models, args.threads)
    if "memory" in args.only:
        memory(models, args.threads)


if __name__ == "__main__":
    main()
