"""Print markdown tables describing shipped checkpoints and their `styletrain evaluate` results.

    python scripts/describe_checkpoints.py checkpoints --evals runs/eval
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
    args = parser.parse_args()

    print("| model | styles | net | crops | style size | batch | steps | train time | hardware | recipe |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for path in sorted(args.folder.glob("*.ckpt")):
        _, m = load_transformer(path)
        net, data = m.net, m.data
        kind = NORM_KINDS.get(net["norm"], net["norm"])
        time = f"{m.train_seconds / 60:.0f} min" if m.train_seconds else "not recorded"
        print(f"| `{path.stem}` | {m.num_styles} | {kind}, width {net['width']}, "
              f"{net['num_residuals']} res. | {data.get('image_size')} px | {m.style_size} px | "
              f"{data.get('batch_size')} | {m.global_step} | {time} | {m.hardware or 'not recorded'} | "
              f"`{m.recipe}` |")
    if not args.evals:
        return
    print()
    print("| model | style | photos | steps | size | fast total (mean) | Gatys total (mean) | ratio fast/Gatys (mean, max) |")
    print("|---|---|---|---|---|---|---|---|")
    for path in sorted(args.evals.glob("*.json")):
        result = json.loads(path.read_text())
        by_style: dict[str, list[dict]] = defaultdict(list)
        for row in result["rows"]:
            by_style[row["style"]].append(row)
        for style, rows in by_style.items():
            mean = lambda key: sum(r[key]["total"] for r in rows) / len(rows)  # noqa: E731
            ratios = [r["ratio"] for r in rows]
            print(f"| `{path.stem}` | {style} | {len(rows)} | {result['steps']} | {result['size']} | "
                  f"{mean('fast'):.3g} | {mean('gatys'):.3g} | {sum(ratios) / len(ratios):.2f}, {max(ratios):.2f} |")


if __name__ == "__main__":
    main()
