"""Example grid of the synthetic scenes for docs/data.md: RGB and every task target.

.venv/bin/python benchmarks/scenes_grid.py [--out docs/images/scenes_grid.png]
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from adapmtl.data.scenes import CLASS_NAMES, NUM_CLASSES, ScenesDataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="docs/images/scenes_grid.png")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--size", type=int, nargs=2, default=(96, 128))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    scenes = ScenesDataset(args.samples, size=tuple(args.size), seed=args.seed)
    columns = ["RGB", "seg", "depth (m)", "normal", "keypoint", "edge"]
    fig, axes = plt.subplots(
        args.samples, len(columns), figsize=(2.0 * len(columns), 1.6 * args.samples)
    )
    colours = plt.get_cmap("tab10", NUM_CLASSES)
    for row in range(args.samples):
        view = scenes.render(row)
        panels = [
            (view.rgb, {}),
            (view.seg, {"cmap": colours, "vmin": -0.5, "vmax": NUM_CLASSES - 0.5}),
            (view.depth, {"cmap": "viridis"}),
            (np.clip(view.normal * 0.5 + 0.5, 0, 1), {}),
            (view.keypoint, {"cmap": "magma", "vmin": 0, "vmax": 1}),
            (view.edge, {"cmap": "gray", "vmin": 0, "vmax": 1}),
        ]
        for col, (pixels, style) in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(pixels, interpolation="nearest", **style)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(columns[col], fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours(k)) for k in range(NUM_CLASSES)]
    fig.legend(
        handles, CLASS_NAMES, loc="lower center", ncol=NUM_CLASSES, fontsize=8, frameon=False
    )
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(args.out, dpi=72)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
