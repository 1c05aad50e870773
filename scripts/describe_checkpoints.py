"""Print markdown tables describing shipped checkpoints and their `styletrain evaluate` results.

    python scripts/describe_checkpoints.py checkpoints --evals checkpoints/eval [--previous OLD_EVAL_DIR]
        [--int8 checkpoints/eval/int8]

With ``--previous``, also the fast totals of the models these replace, scored the same way (a model
ships only where it is better), and the multi-style net against the single-style nets. With
``--int8``, the int8 variants against their fp32 nets (``evaluate --variant NAME.int8.onnx`` results).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from styletrain.checkpoint import load_transformer

NORM_KINDS = {"instance": "IN", "conditional_instance": "CIN"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--evals", type=Path, help="folder of NAME.json files written by styletrain evaluate")
    parser.add_argument("--previous", type=Path, help="the same for the models these replace")
    parser.add_argument("--int8", type=Path, help="folder of NAME.json files from evaluate --variant NAME.int8.onnx")
    args = parser.parse_args()
    if args.int8:
        print_int8(args.int8)
        print()

    print("| model | styles | net | crops | style size | batch | steps | train time | hardware | recipe |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for path in sorted(args.folder.glob("*.ckpt")):
        _, m = load_transformer(path)
        net, data = m.net, m.data
        kind = NORM_KINDS.get(net["norm"], net["norm"])
        time = f"{m.train_seconds / 60:.0f} min" if m.train_seconds else "not recorded"
        runs = lineage(m.started_from)  # train --init-from: the runs before, oldest first, then this one
        steps = " + ".join([str(run["global_step"]) for run in runs] + [str(m.global_step)])
        before = [run.get("train_seconds") for run in runs]
        if runs and all(before):
            time += f" (+ {sum(before) / 60:.0f} min before)"
        widths = [run["widened_from"] for run in runs if "widened_from" in run] + [net["width"]]
        print(f"| `{path.stem}` | {m.num_styles} | {kind}, width {' -> '.join(map(str, widths))}, "
              f"{net['num_residuals']} res. | {data.get('image_size')} px | {m.style_size} px | "
              f"{data.get('batch_size')} | {steps} | {time} | {m.hardware or 'not recorded'} | "
              f"`{m.recipe}` |")
    if not args.evals:
        return
    print()
    print("| model | style | photos | steps | size | fast total (mean) | Gatys total (mean) "
          "| ratio fast/Gatys (mean, max) |")
    print("|---|---|---|---|---|---|---|---|")
    for path in sorted(args.evals.glob("*.json")):
        result = json.loads(path.read_text())
        by_style: dict[str, list[dict]] = defaultdict(list)
        for row in result["rows"]:
            by_style[row["style"]].append(row)
        for style, rows in by_style.items():
            ratios = [r["ratio"] for r in rows]
            print(f"| `{path.stem}` | {style} | {len(rows)} | {result['steps']} | {result['size']} | "
                  f"{mean_total(rows, 'fast'):.3g} | {mean_total(rows, 'gatys'):.3g} | "
                  f"{sum(ratios) / len(ratios):.2f}, {max(ratios):.2f} |")
    new = fast_totals(args.evals)
    singles = {model: style for model, style in new if model == style}
    print()
    print("Multi-style net / single-style net, same style (mean fast total):",
          ", ".join(f"{style} {new['multistyle', style] / new[style, style]:.2f}x"
                    for style in sorted(singles) if ("multistyle", style) in new))
    if args.previous:
        old = fast_totals(args.previous)
        print()
        print("| model | style | fast total, previous model | fast total, this model | this / previous |")
        print("|---|---|---|---|---|")
        for key in sorted(new.keys() & old.keys()):
            print(f"| `{key[0]}` | {key[1]} | {old[key]:.3g} | {new[key]:.3g} | {new[key] / old[key]:.2f} |")


def lineage(started_from: dict | None) -> list[dict]:
    """The ``--init-from`` records of a model's earlier runs, oldest first."""
    runs = []
    while started_from:
        runs.append(started_from)
        started_from = started_from.get("started_from")
    return runs[::-1]


def print_int8(folder: Path) -> None:
    """Per model: int8 total / fp32 total and mean |diff| (0-255), ranges over the scored rows."""
    print("| model | photos x styles | int8 / fp32 total | mean \\|diff\\| (0-255) |")
    print("|---|---|---|---|")
    for path in sorted(folder.glob("*.json")):
        rows = json.loads(path.read_text())["rows"]
        ratios, diffs = [], []
        for row in rows:
            (variant,) = row["variants"].values()
            ratios.append(variant["total"] / row["fast"]["total"])
            diffs.append(variant["mean_abs_diff"])
        photos, styles = len({r["photo"] for r in rows}), len({r["style"] for r in rows})
        print(f"| `{path.stem}` | {photos} x {styles} | {min(ratios):.4f}-{max(ratios):.4f} | "
              f"{min(diffs):.1f}-{max(diffs):.1f} |")


def mean_total(rows: list[dict], which: str) -> float:
    return sum(r[which]["total"] for r in rows) / len(rows)


def fast_totals(folder: Path) -> dict[tuple[str, str], float]:
    """(model, style) -> mean fast total over the photos, from ``folder/MODEL.json``."""
    totals = {}
    for path in sorted(folder.glob("*.json")):
        by_style: dict[str, list[dict]] = defaultdict(list)
        for row in json.loads(path.read_text())["rows"]:
            by_style[row["style"]].append(row)
        totals |= {(path.stem, style): mean_total(rows, "fast") for style, rows in by_style.items()}
    return totals


if __name__ == "__main__":
    main()
