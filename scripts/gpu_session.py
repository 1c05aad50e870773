"""Train the shipped styles on a lent GPU within one lease (15 or 30 minutes), in stages.

Here, once (CPU):
    python scripts/gpu_session.py pack
        -> .carry/gpu/ (git-ignored, <= 60 MiB): a float16 VGG16 truncated after relu4_3, the training
           photos re-encoded at 288 px short side, the paintings and the demo photos, laid out like
           ../shared so the recipes in configs/ run unchanged against it.
    python scripts/gpu_session.py aside
        -> deletes the shipped .onnx files and rendered images from the working tree (committed, so
           `git checkout -- checkpoints docs` brings them back after the lease): the project and the
           pack must fit in the 64 MiB a call carries.
On the GPU machine (device tool: carry .carry; everything for the user lands in $OUT):
    python3 scripts/gpu_session.py check              # versions, CUDA, bf16, the imports training needs
    python3 scripts/gpu_session.py probe              # <= 3 min: images/s table (bench_training.py)
    python3 scripts/gpu_session.py train --minutes 8  # every model side by side, resuming
    python3 scripts/gpu_session.py evaluate           # evaluate --device cuda on the demo photos
Options the script does not know go on to the command it runs (``styletrain train``,
``bench_training.py``, ``styletrain evaluate``), e.g. ``train --max-steps 2 --image-size 64`` in tests.

Plan from the device time ``status`` gives (machine starts count; a call runs at most 10 minutes).
30 minutes: call 1: check, probe, then ``train --minutes 5`` with the batch size the probe favours
(edit configs/*.yaml here first if it is not 16); call 2: ``train --minutes 9``; call 3: ``train
--minutes 6`` then ``evaluate`` if time is left (else evaluate here).
15 minutes (the loan since December 2026): call 1: check, ``probe --batches 16,32`` (the last
``--batches`` wins), ``train --minutes 6``; call 2 at once while the machine is warm, if 3 minutes are
left: ``train --minutes`` (what is left less 1.5); evaluate here.
Each call starts with ``set -o pipefail`` and ends by leaving the slim checkpoints in $OUT.
``train`` resumes from runs/gpu/NAME/last.ckpt while the machine stays warm, else starts from the slim
checkpoints of the last call (``--init-dir``, e.g. the files that came back, carried again), so losing
the machine costs one run. After each stage the slim checkpoints, logs and sample grids go to $OUT.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("multistyle", "mosaic", "starry_night_crop", "the_scream", "wave_crop")
SHARED = "../shared"
PACK = ROOT / ".carry" / "gpu"
RUNS = ROOT / "runs" / "gpu"
VGG_FILE = "weights/vgg16_imagenet_features.pth"
RELU4_3 = 22
"""Index of relu4_3 in torchvision's VGG16 ``features``: the deepest layer the losses use."""
NOT_NEEDED = ("checkpoints/*.onnx", "docs/**/*.png")  # git globs: "**/" also matches no folder
"""Tracked files a lease does not use (the shipped ONNX models, rendered images): ``aside`` takes them
out of the working tree so that the pack and the project fit in the 64 MiB a call carries."""


def pack(shared: Path, dest: Path, *, short_side: int = 288, quality: int = 75, limit: int | None = None) -> None:
    """Write everything a bare GPU machine needs into ``dest``, laid out like ``shared``."""
    import torch

    from styletrain.data import list_images
    from styletrain.images import open_image, resize_short_side

    if dest.exists():
        shutil.rmtree(dest)
    (dest / "weights").mkdir(parents=True)
    state = torch.load(shared / VGG_FILE, map_location="cpu", weights_only=True)
    keep = {k: v.half() for k, v in state.items() if int(k.split(".")[-2]) < RELU4_3}
    torch.save(keep, dest / VGG_FILE)
    train = dest / "data" / "train"
    train.mkdir(parents=True)
    for path in list_images(shared / "data" / "train")[:limit]:
        image = open_image(path)
        if min(image.size) > short_side:
            image = resize_short_side(image, short_side)
        image.save(train / f"{path.stem}.jpg", quality=quality)
    for folder in ("styles", "content"):
        shutil.copytree(shared / "data" / folder, dest / "data" / folder)
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    print(f"wrote {dest}: {size / 2**20:.1f} MiB")
    needless = set(tracked(ROOT, *NOT_NEEDED))
    tree = sum((ROOT / name).stat().st_size for name in tracked(ROOT) if name not in needless
               and (ROOT / name).is_file())
    print(f"with the working tree less what a lease does not need ({tree / 2**20:.1f} MiB): "
          f"{(size + tree) / 2**20:.1f} MiB of the 64 MiB a call carries")
    if size + tree > 63 * 2**20:
        raise SystemExit("too large to carry: pass a smaller --short-side or --quality")
    print("before the first call: python scripts/gpu_session.py aside")


def tracked(root: Path, *patterns: str) -> list[str]:
    """Files git tracks under ``root`` (matching ``patterns``, git pathspec globs, if given)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--", *(f":(glob){p}" for p in patterns)], cwd=root,
                            capture_output=True, text=True, check=True).stdout
    return [name for name in listed.split("\0") if name]


def aside(root: Path) -> None:
    """Delete the tracked files a lease does not need (``NOT_NEEDED``) from the working tree; only
    files committed unchanged, so ``git checkout -- checkpoints docs`` brings every one back."""
    names = tracked(root, *NOT_NEEDED)
    changed = subprocess.run(["git", "diff", "--name-only", "--diff-filter=d", "HEAD", "--", *names], cwd=root,
                             capture_output=True, text=True, check=True).stdout.split()
    if changed:
        raise SystemExit(f"commit these first, so that git can bring them back: {' '.join(changed)}")
    for name in names:
        (root / name).unlink(missing_ok=True)
    print(f"set aside {len(names)} files; after the lease: git checkout -- checkpoints docs")


def recipe(name: str, shared: Path, runs: Path) -> Path:
    """``configs/NAME.yaml`` with ``../shared`` pointed at ``shared`` and ``out`` under ``runs``."""
    text = (ROOT / "configs" / f"{name}.yaml").read_text().replace(SHARED + "/", f"{shared.resolve()}/")
    settings = yaml.safe_load(text)
    settings["out"] = str(runs / name)
    path = runs / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    return path


def train(names: list[str], minutes: float, shared: Path, runs: Path, out: Path, *, init_dir: Path | None,
          extra: list[str]) -> None:
    """Train ``names`` side by side for at most ``minutes``, then collect into ``out``."""
    seconds = int(minutes * 60)
    limit = f"00:{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    jobs = {}
    for name in names:
        command = [sys.executable, "-m", "styletrain", "train", "--config", str(recipe(name, shared, runs)),
                   "--max-time", limit, "--no-progress", *extra]
        start = init_dir / f"{name}.ckpt" if init_dir else None
        if not (runs / name / "last.ckpt").is_file() and start and start.is_file():
            command += ["--init-from", str(start)]
        log = (runs / f"{name}.log").open("a")
        print(" ".join(command), flush=True)
        jobs[name] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT), log)
    failed = []
    for name, (process, log) in jobs.items():
        if process.wait() != 0:
            failed.append(name)
        log.close()
    collect(names, runs, out)
    if failed:
        for name in failed:
            print(f"--- {name} failed; end of its log:\n" + (runs / f"{name}.log").read_text()[-3000:])
        raise SystemExit(f"training failed for {', '.join(failed)}")


def collect(names: list[str], runs: Path, out: Path) -> None:
    """Slim checkpoints (one file per model) and one archive of logs and the newest sample grids."""
    import torch

    from styletrain.checkpoint import read_checkpoint, save_slim

    out.mkdir(parents=True, exist_ok=True)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for name in names:
            run = runs / name
            if (run / "last.ckpt").is_file():
                save_slim(run / "last.ckpt", out / f"{name}.ckpt", dtype=torch.float16)
                meta = read_checkpoint(out / f"{name}.ckpt")["styletrain"]
                print(f"{name}: step {meta['global_step']}, {meta.get('train_seconds', 0) / 60:.1f} min, "
                      f"{meta.get('hardware')}")
            for path in [runs / f"{name}.log", *sorted(run.glob("logs/**/metrics.csv")),
                         *sorted(run.glob("samples/*.png"))[-2:]]:
                tar.add(path, arcname=str(path.relative_to(runs)))
    (out / "runs.tar.gz").write_bytes(archive.getvalue())


def evaluate(names: list[str], shared: Path, out: Path, *, steps: int, size: int, device: str,
             extra: list[str]) -> None:
    """``styletrain evaluate`` of each collected model on the demo photos; JSON into ``out``."""
    for name in names:
        command = [sys.executable, "-m", "styletrain", "evaluate", "--checkpoint", str(out / f"{name}.ckpt"),
                   "--content-dir", str(shared / "data" / "content"), "--style-dir", str(shared / "data" / "styles"),
                   "--vgg-weights", str(shared / VGG_FILE), "--steps", str(steps), "--size", str(size),
                   "--device", device, "--json", str(out / f"eval_{name}.json"), *extra]
        print(" ".join(command), flush=True)
        subprocess.run(command, check=True, cwd=ROOT)


def check() -> None:
    """What the machine has: fail fast (and cheaply) on a missing import before any training."""
    import lightning
    import torch
    import torchvision

    import styletrain.cli.train  # noqa: F401  (the training command's imports)
    from styletrain.train import default_precision

    cuda = torch.cuda.is_available()
    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"lightning {lightning.__version__}, cuda {cuda}"
          + (f" ({torch.cuda.get_device_name()}, bf16 {torch.cuda.is_bf16_supported()})" if cuda else "")
          + f", default precision {default_precision('auto')}, {os.cpu_count()} CPU cores")


def probe(shared: Path, out: Path, extra: list[str]) -> None:
    """The training throughput table on this device, photos from ``shared``."""
    command = [sys.executable, str(ROOT / "benchmarks" / "bench_training.py"), "--widths", "32",
               "--batches", "8,16,32", "--no-compile", "--steps", "10", "--warmup", "3", "--bf16-check-steps", "0",
               "--data", str(shared / "data" / "train"), "--workers", str(min(12, os.cpu_count() or 1)), *extra]
    print(" ".join(command), flush=True)
    try:
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180)
        text = result.stdout + result.stderr[-2000:]
    except subprocess.TimeoutExpired as exc:  # keep the rows measured so far
        partial = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        text = partial + "\nprobe stopped at its 3-minute limit\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe.txt").write_text(text)
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("stage", choices=("pack", "aside", "check", "probe", "train", "evaluate"))
    parser.add_argument("names", nargs="*", default=list(MODELS), help=f"models (default: {' '.join(MODELS)})")
    parser.add_argument("--shared", type=Path, help=f"data root laid out like ../shared (default: {SHARED} if it "
                        f"exists, else {PACK.relative_to(ROOT)})")
    parser.add_argument("--pack", type=Path, default=PACK, help="where pack writes")
    parser.add_argument("--limit", type=int, help="pack: only this many training photos (tests)")
    parser.add_argument("--short-side", type=int, default=288, help="pack: photos' short side (crops are 256)")
    parser.add_argument("--quality", type=int, default=75, help="pack: JPEG quality of the photos")
    parser.add_argument("--runs", type=Path, default=RUNS)
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)  # aside: the repository (tests)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ROOT / "runs" / "gpu-out")))
    parser.add_argument("--minutes", type=float, default=8.0, help="train: wall-clock limit of this run")
    parser.add_argument("--init-dir", type=Path, help="train: slim NAME.ckpt files to start from on a fresh machine")
    parser.add_argument("--eval-steps", type=int, default=100, help="evaluate: L-BFGS steps")
    parser.add_argument("--eval-size", type=int, default=256, help="evaluate: photo size")
    parser.add_argument("--eval-device", default="cuda", help="evaluate: device")
    args, extra = parser.parse_known_args()
    unknown = [n for n in args.names if n not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {MODELS}")
    shared = args.shared or (Path(SHARED) if (ROOT / SHARED).is_dir() else PACK)
    shared = shared if shared.is_absolute() else (ROOT / shared)
    start = time.monotonic()
    if args.stage == "pack":
        pack(shared, args.pack, short_side=args.short_side, quality=args.quality, limit=args.limit)
    elif args.stage == "aside":
        aside(args.root)
    elif args.stage == "check":
        check()
    elif args.stage == "probe":
        probe(shared, args.out, extra)
    elif args.stage == "train":
        train(args.names, args.minutes, shared, args.runs, args.out, init_dir=args.init_dir, extra=extra)
    else:
        evaluate(args.names, shared, args.out, steps=args.eval_steps, size=args.eval_size, device=args.eval_device,
                 extra=extra)
    print(f"{args.stage} took {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()
