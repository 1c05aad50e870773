"""CPU latency: the pytorch/examples fast_neural_style net in eager fp32 vs styletrain's CPU paths.

    python benchmarks/bench_cpu.py                          # width 32, 256/512/1024 px
    python benchmarks/bench_cpu.py --sizes 512 --repeats 9
    python benchmarks/bench_cpu.py --calibration-dir ../shared/data/train --threads 2

Every model has the same weights: a random styletrain ``TransformerNet(width=32)`` (one style,
instance norm) copied into the pytorch/examples architecture, which is written out below
(ConvLayer with reflection padding, affine InstanceNorm2d, 5 residual blocks, nearest-interpolate
upsampling, ReLU; 32-64-128 channels). Random weights are fine for timing: the work per pixel does
not depend on the values (the int8 model is still calibrated on real photos, as shipped).

Columns, one image (batch 1), inference only on a ready array, all in one process and run:

- ``example``: pytorch/examples ``TransformerNet``, eager fp32 under ``torch.inference_mode``
  (its own scale: input 0-255);
- ``ort plain``: styletrain's onnxruntime model before this work (the export as written);
- ``ort fp32``: the same file as ``OnnxStylizer`` now runs it on the CPU (exact graph rewrites);
- ``ort int8``: ``NAME.int8.onnx`` (``styletrain quantize``, residual convs int8, the default);
- ``ort int8 all``: ``--int8-layers all`` (every conv but the first; fails the 2% quality gate);
- ``torch bf16``: the styletrain net under bf16 autocast, channels-last (only on CPUs with
  AVX512-BF16 or AMX, where it is the torch backend's automatic choice).

The backends take turns within each repeat (round robin), so a burst of load from other
processes hits them alike; p50 over the repeats after one warm-up run each. A second table times
the int8 model from 8-bit pixels to 8-bit pixels: numpy conversion (what the server does today)
vs the uint8 NHWC graph (``styletrain.runtime.pixel_io``).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CALIBRATION = ROOT.parent / "shared" / "data" / "train"


def example_net(width: int = 32):  # noqa: ANN201 - torch imported inside
    """pytorch/examples fast_neural_style/neural_style/transformer_net.py, at ``width`` (32 there)."""
    import torch
    from torch import nn

    class ConvLayer(nn.Module):
        def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int) -> None:
            super().__init__()
            self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
            self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv2d(self.reflection_pad(x))

    class ResidualBlock(nn.Module):
        def __init__(self, channels: int) -> None:
            super().__init__()
            self.conv1 = ConvLayer(channels, channels, kernel_size=3, stride=1)
            self.in1 = nn.InstanceNorm2d(channels, affine=True)
            self.conv2 = ConvLayer(channels, channels, kernel_size=3, stride=1)
            self.in2 = nn.InstanceNorm2d(channels, affine=True)
            self.relu = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            residual = x
            out = self.relu(self.in1(self.conv1(x)))
            out = self.in2(self.conv2(out))
            return out + residual

    class UpsampleConvLayer(nn.Module):
        def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                     upsample: int | None = None) -> None:
            super().__init__()
            self.upsample = upsample
            self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
            self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.upsample:
                x = nn.functional.interpolate(x, mode="nearest", scale_factor=self.upsample)
            return self.conv2d(self.reflection_pad(x))

    class TransformerNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            c1, c2, c3 = width, 2 * width, 4 * width
            self.conv1 = ConvLayer(3, c1, kernel_size=9, stride=1)
            self.in1 = nn.InstanceNorm2d(c1, affine=True)
            self.conv2 = ConvLayer(c1, c2, kernel_size=3, stride=2)
            self.in2 = nn.InstanceNorm2d(c2, affine=True)
            self.conv3 = ConvLayer(c2, c3, kernel_size=3, stride=2)
            self.in3 = nn.InstanceNorm2d(c3, affine=True)
            self.res1, self.res2, self.res3, self.res4, self.res5 = (ResidualBlock(c3) for _ in range(5))
            self.deconv1 = UpsampleConvLayer(c3, c2, kernel_size=3, stride=1, upsample=2)
            self.in4 = nn.InstanceNorm2d(c2, affine=True)
            self.deconv2 = UpsampleConvLayer(c2, c1, kernel_size=3, stride=1, upsample=2)
            self.in5 = nn.InstanceNorm2d(c1, affine=True)
            self.deconv3 = ConvLayer(c1, 3, kernel_size=9, stride=1)
            self.relu = nn.ReLU()

        def forward(self, X: torch.Tensor) -> torch.Tensor:  # noqa: N803 - the example's name
            y = self.relu(self.in1(self.conv1(X)))
            y = self.relu(self.in2(self.conv2(y)))
            y = self.relu(self.in3(self.conv3(y)))
            y = self.res5(self.res4(self.res3(self.res2(self.res1(y)))))
            y = self.relu(self.in4(self.deconv1(y)))
            y = self.relu(self.in5(self.deconv2(y)))
            return self.deconv3(y)

    return TransformerNet()


def copy_weights(net, example) -> None:  # noqa: ANN001
    """Put the styletrain net's weights into the example net (same layers, other names)."""
    import torch

    blocks = net.blocks
    pairs = [(example.conv1.conv2d, blocks[0].conv), (example.in1, blocks[0].norm),
             (example.conv2.conv2d, blocks[1].conv), (example.in2, blocks[1].norm),
             (example.conv3.conv2d, blocks[2].conv), (example.in3, blocks[2].norm)]
    for k in range(5):
        res, block = getattr(example, f"res{k + 1}"), blocks[3 + k]
        pairs += [(res.conv1.conv2d, block.a.conv), (res.in1, block.a.norm),
                  (res.conv2.conv2d, block.b.conv), (res.in2, block.b.norm)]
    pairs += [(example.deconv1.conv2d, blocks[8].conv), (example.in4, blocks[8].norm),
              (example.deconv2.conv2d, blocks[9].conv), (example.in5, blocks[9].norm),
              (example.deconv3.conv2d, blocks[10].conv)]
    with torch.no_grad():
        for dst, src in pairs:
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per size and backend (3 at >= 1024)")
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--threads", type=int, help="torch and onnxruntime intra-op threads (default: theirs)")
    parser.add_argument("--calibration-dir", default=str(DEFAULT_CALIBRATION),
                        help=f"photos for the int8 calibration (default {DEFAULT_CALIBRATION})")
    parser.add_argument("--skip", nargs="*", default=[], choices=["int8-all", "pixels"])
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))

    import onnx
    import onnxruntime as ort
    import torch

    from styletrain.export import export_net
    from styletrain.images import array_to_image, image_to_array
    from styletrain.metadata import ModelMetadata
    from styletrain.runtime.onnx_backend import CPU, OnnxStylizer
    from styletrain.runtime.pixel_io import PIXELS, with_uint8_io
    from styletrain.runtime.torch_backend import TorchStylizer
    from styletrain.runtime.variants import cpu_facts, int8_is_faster
    from styletrain.transformer import TransformerNet

    if args.threads:
        torch.set_num_threads(args.threads)
    facts = cpu_facts()
    print(f"# CPU: {facts.summary()}")
    print(f"# {os.cpu_count()} logical CPUs; torch {torch.__version__} ({torch.get_num_threads()} threads, "
          f"capability {torch.backends.cpu.get_cpu_capability()}); onnxruntime {ort.__version__} "
          f"({args.threads or 'default'} threads); Python {platform.python_version()}; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"# automatic choices here: onnxruntime variant {'int8' if int8_is_faster(facts) else 'fp32'}, "
          "torch precision fp32 (bf16 on request)")

    torch.manual_seed(0)
    net = TransformerNet(1, width=args.width).eval()
    with torch.no_grad():  # non-trivial norm parameters, as a trained net has
        for name, param in net.named_parameters():
            if name.endswith(("norm.weight", "norm.bias")):
                param.uniform_(0.5, 1.5) if name.endswith("weight") else param.uniform_(-0.5, 0.5)
    example = example_net(args.width).eval()
    copy_weights(net, example)

    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_net(net, ModelMetadata(style_names=["style0"]), Path(tmp) / "bench.onnx", check=True)
        backends: dict[str, Callable[[np.ndarray], object]] = {}
        backends["example"] = lambda x: example(torch.from_numpy(x) * 255.0)
        plain = OnnxStylizer(fp32, providers=[CPU], threads=args.threads, cpu_rewrite=False)
        rewritten = OnnxStylizer(fp32, providers=[CPU], threads=args.threads)
        one = np.ones(1, np.float32)
        backends["ort plain"] = lambda x: plain.run(x, one)
        backends["ort fp32"] = lambda x: rewritten.run(x, one)
        int8 = None
        if Path(args.calibration_dir).is_dir():
            from styletrain.quantize import quantize_model

            layer_sets = ["residual"] + ([] if "int8-all" in args.skip else ["all"])
            for layers in layer_sets:
                path = quantize_model(fp32, Path(tmp) / f"bench.{layers}.onnx", calibration_dir=args.calibration_dir,
                                      layers=layers)
                stylizer = OnnxStylizer(path, providers=[CPU], threads=args.threads)
                int8 = int8 or stylizer
                backends["ort int8" if layers == "residual" else "ort int8 all"] = \
                    lambda x, s=stylizer: s.run(x, one)
        else:
            print(f"# int8: not measured (no calibration photos at {args.calibration_dir})")
        if facts.bf16:
            bf16 = TorchStylizer(net, ModelMetadata(style_names=["style0"]), precision="bfloat16")
            backends["torch bf16"] = lambda x: bf16.run(x, one)
        else:
            print("# torch bf16: not measured (this CPU lacks avx512_bf16 / amx_bf16; emulated bf16 is slower)")

        pixel_paths = {}
        if int8 is not None and "pixels" not in args.skip:
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.log_severity_level = 3
            if args.threads:
                options.intra_op_num_threads = args.threads
            u8 = ort.InferenceSession(with_uint8_io(onnx.load(int8.path)).SerializeToString(), options, providers=[CPU])
            shrink = ort.RunOptions()  # as OnnxStylizer runs: the arena gives back what a run grew (~10% here)
            shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
            # decoded PIL image in, PIL image out: what the server has before encoding and after decoding
            pixel_paths["int8, numpy conversion"] = lambda image: array_to_image(int8.run(image_to_array(image), one))
            pixel_paths["int8, uint8 graph"] = lambda image: Image.fromarray(
                u8.run(None, {PIXELS: np.asarray(image)[None]}, shrink)[0][0])

        rows = []
        rng = np.random.default_rng(0)
        for side in args.sizes:
            repeats = args.repeats if side < 1024 else min(args.repeats, 3)
            x = rng.random((1, 3, side, side), dtype=np.float32)
            ms = time_round_robin({k: (lambda f=f: f(x)) for k, f in backends.items()}, repeats)
            px = Image.fromarray((rng.random((side, side, 3)) * 255).astype(np.uint8))
            pms = time_round_robin({k: (lambda f=f: f(px)) for k, f in pixel_paths.items()}, repeats)
            rows.append((side, repeats, ms, pms))
            print(f"# {side}px x{repeats}: " + "  ".join(f"{k} {statistics.median(v):.0f} ms" for k, v in ms.items()),
                  flush=True)

    names = list(rows[0][2])
    print(f"\n## CPU latency, batch 1, p50 ms (speed-up vs the example); {facts.model}\n")
    print("| size | runs | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for side, repeats, ms, _ in rows:
        base = statistics.median(ms["example"])
        cells = [f"{statistics.median(v):.0f} ({base / statistics.median(v):.2f}x)" for v in ms.values()]
        print(f"| {side} | {repeats} | " + " | ".join(cells) + " |")
    if pixel_paths:
        print("\n## int8 from 8-bit pixels to 8-bit pixels, p50 ms\n")
        print("| size | " + " | ".join(pixel_paths) + " |")
        print("|---|" + "---|" * len(pixel_paths))
        for side, _, _, pms in rows:
            print(f"| {side} | " + " | ".join(f"{statistics.median(v):.0f}" for v in pms.values()) + " |")
    print()
    default = "ort int8" if int8_is_faster(facts) and "ort int8" in rows[0][2] else "ort fp32"
    for side, _, ms, _ in rows:
        base = statistics.median(ms["example"])
        speedup = base / statistics.median(ms[default])
        best = min((k for k in ms if k != "example"), key=lambda k: statistics.median(ms[k]))
        print(f"- {side}px: this CPU's default path ({default}) {speedup:.2f}x the example"
              + (f" (target >= 2x: {'met' if speedup >= 2 else 'NOT met'})" if side == 512 else "")
              + f"; fastest column {best}, {base / statistics.median(ms[best]):.2f}x")
    print(f"- load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
          "(timings from a busy machine are noisy: compare columns of one run only)")


def time_round_robin(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Milliseconds per call: one warm-up each, then ``repeats`` rounds in which every fn runs once."""
    import torch

    out: dict[str, list[float]] = {k: [] for k in fns}
    with torch.inference_mode():
        for fn in fns.values():
            fn()
        for _ in range(repeats):
            for name, fn in fns.items():
                time.sleep(0.05)  # let the last backend's spinning worker threads (OpenMP, onnxruntime) go idle
                start = time.perf_counter()
                fn()
                out[name].append((time.perf_counter() - start) * 1000)
    return out


if __name__ == "__main__":
    main()
