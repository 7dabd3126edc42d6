"""The report of `study_vivid_recipes.py`: each recipe against the scaled-L1 line.

    python experiments/vivid_recipes_report.py studies/vivid_recipes [--scales 1.1,1.25,1.4,1.6]

The simplest way to make colors more vivid is to multiply the L1 model's predicted ab by a
factor (`python -m jaxcolor.evaluate --ab_scale`). This evaluates the study's `l1` member at
several factors on the study's split and eval overrides, then prints a markdown table with,
for every recipe, the PSNR the scaled L1 model reaches at the recipe's colorfulness ratio
(linear interpolation between the measured factors): a recipe is only worth its cost where it
beats that line. It also writes `vivid_recipes.png` into the study folder: PSNR against
colorfulness ratio, recipes as points, the scaled-L1 line as a curve.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

METRICS = ("psnr", "ssim", "ab_mae", "colorfulness_ratio", "colorfulness_delta", "wrong_hue")


def scaled_l1(study_dir: str, split: str, eval_overrides: dict, scales) -> list[dict]:
    """The `l1` member's evaluation at each ab scale (cached in its eval_<split>_<step>_x<s>.json)."""
    from jaxcolor import evaluate

    workdir = os.path.join(study_dir, "cells", "l1", "seed_0")
    overrides = {k if k.startswith("data.") else f"data.{k}": v for k, v in eval_overrides.items()}
    out = []
    for scale in scales:
        result = evaluate.evaluate(workdir, split, overrides=overrides, ab_scale=scale)
        out.append({"scale": scale, **{k: result["model"][k] for k in METRICS}})
    return out


def psnr_at(line: list[dict], ratio: float) -> float:
    """The scaled-L1 line's PSNR at a colorfulness ratio (NaN outside the measured range)."""
    xs = np.array([p["colorfulness_ratio"] for p in line])
    ys = np.array([p["psnr"] for p in line])
    order = np.argsort(xs)
    xs, ys = xs[order], ys[order]
    if not xs[0] <= ratio <= xs[-1]:
        return float("nan")
    return float(np.interp(ratio, xs, ys))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study_dir")
    parser.add_argument("--scales", default="1.0,1.15,1.3,1.5,1.75,2.0")
    args = parser.parse_args(argv)
    with open(os.path.join(args.study_dir, "summary.json")) as f:
        summary = json.load(f)
    with open(os.path.join(args.study_dir, "study.json")) as f:
        study = json.load(f)
    line = scaled_l1(args.study_dir, summary["split"], study.get("eval_overrides", {}),
                     [float(s) for s in args.scales.split(",")])
    rows = []
    for name, cell in summary["cells"].items():
        m = {k: cell["metrics"][k]["mean"] if cell["metrics"][k]["n"] else float("nan")
             for k in METRICS}
        rows.append((name, m, psnr_at(line, m["colorfulness_ratio"])))
    head = ["recipe", "PSNR", "SSIM", "ab MAE", "CF ratio", "dCF", "wrong hue",
            "scaled-L1 PSNR at that CF ratio", "beats the line by (dB)"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for name, m, ref in rows:
        print(f"| {name} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['ab_mae']:.2f} | "
              f"{m['colorfulness_ratio']:.3f} | {m['colorfulness_delta']:.2f} | "
              f"{m['wrong_hue']:.4f} | {ref:.2f} | {m['psnr'] - ref:+.2f} |")
    print("\nscaled L1 (`evaluate --ab_scale`):\n\n| ab scale | PSNR | CF ratio | wrong hue |\n"
          "|---|---|---|---|")
    for p in line:
        print(f"| {p['scale']:g} | {p['psnr']:.2f} | {p['colorfulness_ratio']:.3f} | "
              f"{p['wrong_hue']:.4f} |")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([p["colorfulness_ratio"] for p in line], [p["psnr"] for p in line], "-o", color="gray",
            label="L1 x ab scale")
    for name, m, _ in rows:
        ax.plot(m["colorfulness_ratio"], m["psnr"], "s")
        ax.annotate(name, (m["colorfulness_ratio"], m["psnr"]), fontsize=7,
                    textcoords="offset points", xytext=(4, 3))
    ax.set_xlabel("colorfulness ratio (prediction / truth)")
    ax.set_ylabel("PSNR (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(args.study_dir, "vivid_recipes.png")
    fig.savefig(path, dpi=120)
    print(f"\nwrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
