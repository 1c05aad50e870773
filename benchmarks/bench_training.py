"""Training throughput (images/s) of one optimizer step, plain versus styletrain's step.

plain: fp32 eager, the full VGG16 (to relu4_3) run on the content batch, the style image and the
output every step, nothing cached - how the common PyTorch example does it.
styletrain: ``StyleTransferModule.training_step`` (content features only as deep as the content
layer, Gram targets cached), then with channels_last, torch.compile and bf16 autocast added.
bf16 is skipped on CPUs without native bf16 (AVX-512 BF16 / AMX), where it is far slower.

    python benchmarks/bench_training.py --size 256 --batches 4 --widths 32,16
    python benchmarks/bench_training.py --device cuda --widths 32 --batches 8,16,32 --data ../shared/data/train

With ``--data`` the fastest variant is also fed real photos: held on the device (``--data-on-device``)
and through a DataLoader with workers, to show whether data loading keeps up.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

from styletrain.data import DeviceBatches, PhotoDataset, list_images

from styletrain.losses import LossConfig, gram_matrix, total_variation
from styletrain.module import StyleTransferModule
from styletrain.transformer import TransformerNet
from styletrain.vgg import LossNetwork


def cpu_has_bf16() -> bool:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return "avx512_bf16" in flags or "amx_bf16" in flags


def plain_step_fn(width: int, size: int, device: torch.device):
    """The reference step: everything recomputed, fp32, eager."""
    cfg = LossConfig()
    vgg = LossNetwork((cfg.content_layer, *cfg.style_layers), weights="random").to(device)
    net = TransformerNet(width=width).to(device).train()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    style = torch.rand(1, 3, size, size, device=device)

    def step(batch: torch.Tensor) -> float:
        opt.zero_grad(set_to_none=True)
        out = net(batch)
        f_out, f_content, f_style = vgg(out), vgg(batch), vgg(style)
        loss = cfg.content_weight * F.mse_loss(f_out[cfg.content_layer], f_content[cfg.content_layer])
        for layer in cfg.style_layers:
            target = gram_matrix(f_style[layer]).expand(batch.shape[0], -1, -1)
            loss = loss + cfg.style_weight * F.mse_loss(gram_matrix(f_out[layer]), target)
        loss = loss + cfg.tv_weight * total_variation(out)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def module_step_fn(width: int, size: int, device: torch.device, *, channels_last: bool, compile: bool,
                   bf16: bool, style_file: Path):
    """styletrain's own training step, driven by hand (no Trainer) to time just the step."""
    module = StyleTransferModule([str(style_file)], style_size=size, width=width, vgg_weights="random",
                                 channels_last=channels_last, compile=compile).to(device)
    module.perceptual_loss  # build and move the loss network
    opt = module.configure_optimizers()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def step(batch: torch.Tensor) -> float:
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = module.training_step(batch, 0)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def throughput(step, batches, warmup: int, steps: int, device: torch.device) -> float:
    """Images/s of ``step`` over ``steps`` batches drawn from the iterator ``batches`` (after ``warmup``)."""
    for _ in range(warmup):
        step(next(batches))
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    images = 0
    for _ in range(steps):
        batch = next(batches)
        images += batch.shape[0]
        step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return images / (time.perf_counter() - start)


def random_batches(batch_size: int, size: int, device: torch.device):
    """The same random batch forever: the step alone, no data loading."""
    batch = torch.rand(batch_size, 3, size, size, device=device)
    while True:
        yield batch


def device_batches(files: list[Path], batch_size: int, size: int, device: torch.device):
    """Photos decoded once and held on the device; crops and flips there (``--data-on-device``)."""
    yield from DeviceBatches(files, size, batch_size, device=device)


def loader_batches(files: list[Path], batch_size: int, size: int, device: torch.device, workers: int):
    """The default path: a DataLoader decoding and cropping JPEGs in ``workers`` processes."""
    loader = DataLoader(PhotoDataset(files, size), batch_size=batch_size, shuffle=True, drop_last=True,
                        num_workers=workers, persistent_workers=workers > 0, pin_memory=device.type == "cuda")
    while True:
        for batch in loader:
            yield batch.to(device, non_blocking=True)


def bf16_loss_gap(width: int, size: int, device: torch.device, style_file: Path, batch_size: int,
                  steps: int = 200) -> float:
    """Relative gap of the mean loss over the last 20 of ``steps`` steps, bf16 versus fp32."""
    finals = []
    for bf16 in (False, True):
        torch.manual_seed(0)
        step = module_step_fn(width, size, device, channels_last=True, compile=False, bf16=bf16,
                              style_file=style_file)
        gen = torch.Generator(device="cpu").manual_seed(1)
        losses = [step(torch.rand(batch_size, 3, size, size, generator=gen).to(device)) for _ in range(steps)]
        finals.append(sum(losses[-20:]) / 20)
    return abs(finals[1] - finals[0]) / finals[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batches", default="4", help="batch sizes, comma-separated (e.g. 8,16,32 on a GPU)")
    parser.add_argument("--widths", default="32,16", help="net widths: 32 default, 16 small")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--data", type=Path, help="folder of photos: also time the fastest variant fed from "
                        "photos held on the device and from a DataLoader with --workers workers")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--bf16-check-steps", type=int, default=200,
                        help="steps for the bf16-vs-fp32 loss check (where bf16 is native; 0 to skip)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("styletrain").setLevel(logging.ERROR)  # "random VGG" is intended: timing only
    device = torch.device(args.device)
    bf16_ok = device.type == "cuda" and torch.cuda.is_bf16_supported() or device.type == "cpu" and cpu_has_bf16()
    files = list_images(args.data) if args.data else []
    with tempfile.TemporaryDirectory() as tmp:
        style_file = Path(tmp) / "style.png"
        Image.effect_noise((args.size, args.size), 64).convert("RGB").save(style_file)
        variants = [("styletrain step", dict(channels_last=False, compile=False, bf16=False)),
                    ("+ channels_last", dict(channels_last=True, compile=False, bf16=False))]
        if not args.no_compile:
            variants.append(("+ channels_last + compile", dict(channels_last=True, compile=True, bf16=False)))
        if bf16_ok:
            variants.append(("+ channels_last + bf16", dict(channels_last=True, compile=False, bf16=True)))
        gpu = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or platform.machine()
        print(f"device: {device} ({gpu}; {torch.get_num_threads()} CPU threads), {args.size}px, "
              f"{args.steps} timed steps after {args.warmup} warm-up; "
              f"bf16 {'on' if bf16_ok else 'skipped: no native bf16'}")
        print(f"| {'width':>5} | {'batch':>5} | {'variant':<38} | {'images/s':>9} | {'speed-up':>8} |")
        print(f"|{'-' * 7}|{'-' * 7}|{'-' * 40}|{'-' * 11}|{'-' * 10}|")
        for width in (int(w) for w in args.widths.split(",")):
            for batch_size in (int(b) for b in args.batches.split(",")):
                def row(name: str, ips: float, base: float) -> None:
                    print(f"| {width:>5} | {batch_size:>5} | {name:<38} | {ips:>9.2f} | {ips / base:>7.2f}x |",
                          flush=True)

                synthetic = random_batches(batch_size, args.size, device)
                base = throughput(plain_step_fn(width, args.size, device), synthetic, args.warmup, args.steps, device)
                row("plain fp32 eager", base, base)
                for name, opts in variants:
                    step = module_step_fn(width, args.size, device, style_file=style_file, **opts)
                    warmup = args.warmup + (2 if opts["compile"] else 0)
                    row(name, throughput(step, synthetic, warmup, args.steps, device), base)
                if files:  # the last (fastest) variant, fed with real photos two ways
                    name, opts = variants[-1]
                    step = module_step_fn(width, args.size, device, style_file=style_file, **opts)
                    fed = device_batches(files, batch_size, args.size, device)
                    images_s = throughput(step, fed, args.warmup, args.steps, device)
                    row(f"{name}, photos on {device.type}", images_s, base)
                    fed = loader_batches(files, batch_size, args.size, device, args.workers)
                    row(f"{name}, DataLoader x{args.workers}", throughput(step, fed, args.warmup, args.steps, device),
                        base)
        if bf16_ok and args.bf16_check_steps:
            batch_size = int(args.batches.split(",")[0])
            gap = bf16_loss_gap(32, args.size, device, style_file, batch_size, args.bf16_check_steps)
            print(f"bf16 vs fp32 loss after {args.bf16_check_steps} steps: {100 * gap:.1f}% apart (target < 5%)")


if __name__ == "__main__":
    main()
