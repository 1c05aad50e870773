"""Render the example images of docs/reference.md by running the README's reference commands.

Each command runs in a fresh ``python -m styletrain`` process on the shared demo photos and styles,
so the printed wall times include start-up, as a user sees them. Usage, from the repository root:

    python scripts/render_reference_docs.py [--checkpoint CKPT] [--out docs/reference] [--only NAME ...]

``--checkpoint`` (a trained single-style mosaic net) enables the ``evaluate`` and fast-net attribution
examples; without it they are skipped. Prints a Markdown table of the times.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CONTENT = SHARED / "data" / "content"
STYLES = SHARED / "data" / "styles"
WEIGHTS = SHARED / "weights" / "vgg16_imagenet_features.pth"


def commands(out: Path, checkpoint: Path | None) -> dict[str, list[str]]:
    """name -> styletrain arguments; each writes ``out/NAME.png``."""
    c, s = CONTENT, STYLES
    runs = {
        "gatys": ["gatys", "--content", c / "chicago.jpg", "--style", s / "mosaic.jpg",
                  "--size", "256", "--scales", "2", "--steps", "15"],
        "gatys_blend_color": ["gatys", "--content", c / "hoovertowernight.jpg", "--style", s / "starry_night_crop.jpg",
                              "--style", s / "the_scream.jpg", "--style-weights", "0.7,0.3", "--preserve-color",
                              "--size", "256", "--scales", "2", "--steps", "15"],
        "texture": ["texture", "--style", s / "starry_night_crop.jpg", "--width", "384", "--height", "192",
                    "--style-size", "256", "--scales", "2", "--steps", "15"],
        "deepdream": ["deepdream", "--input", c / "amber.jpg", "--size", "256", "--layer", "relu4_3",
                      "--octaves", "3", "--steps", "6"],
        "invert": ["invert", "--input", c / "chicago.jpg", "--size", "128", "--steps", "40",
                   "--layer", "relu2_2", "--layer", "relu3_3", "--layer", "relu4_3"],
        "visualize": ["visualize", "--layer", "relu4_3", "--channel", "0,10,20", "--size", "128", "--steps", "40"],
        "filters": ["visualize", "--filters"],
        "patches": ["visualize", "--layer", "relu3_3", "--channel", "12,40", "--photos", SHARED / "data" / "train",
                    "--limit", "60", "--photo-size", "160", "--top", "8"],
        "attribute_gradcam": ["attribute", "--input", c / "amber.jpg", "--size", "256", "--method", "gradcam",
                              "--layer", "relu4_3"],
        "attribute_guided": ["attribute", "--input", c / "amber.jpg", "--size", "256", "--method", "guided",
                             "--layer", "relu4_3"],
    }
    if checkpoint is not None:
        runs["attribute_region"] = ["attribute", "--input", c / "chicago.jpg", "--size", "256", "--checkpoint",
                                    checkpoint, "--region", "112,40,144,72", "--method", "saliency"]
        runs["evaluate"] = ["evaluate", "--checkpoint", checkpoint, "--content-dir", c, "--limit", "1",
                            "--steps", "20", "--size", "256", "--style-dir", s, "--json", out / "evaluate.json",
                            "--grid", out / "evaluate.png"]
    for name, argv in runs.items():
        if argv[0] != "evaluate":
            argv += ["--output", out / f"{name}.png", "--no-progress"]
        else:
            argv += ["--no-progress"]
        argv += ["--vgg-weights", WEIGHTS]
    return {name: [str(a) for a in argv] for name, argv in runs.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="trained mosaic net for evaluate / region attribution")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "reference")
    parser.add_argument("--only", nargs="*", help="render only these examples")
    args = parser.parse_args()
    if not (WEIGHTS.is_file() and CONTENT.is_dir()):
        sys.exit(f"needs the shared VGG weights and demo photos under {SHARED}")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, argv in commands(args.out, args.checkpoint).items():
        if args.only and name not in args.only:
            continue
        print("$ styletrain " + " ".join(argv), flush=True)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "styletrain", *argv], check=True, cwd=ROOT)
        rows.append((name, time.perf_counter() - start))
    threads = os.environ.get("OMP_NUM_THREADS", "default")
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, OMP_NUM_THREADS={threads}")
    print("| example | wall time (s) |\n|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
