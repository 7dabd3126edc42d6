"""`python experiments/vivid_grid.py OUT.png NAME=RUN[@STEP] ...`: the vivid-colors study figure.

One column per test image (the first `--images` of the run's test split, at the model's
resolution), one row each for the ground truth, the gray input and every run given, each run
decoded as `jaxcolor.colorize` would (classification runs by the annealed mean at the run's T,
or `NAME=RUN@STEP:T` for another T). Rows are labelled on the left.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from PIL import Image, ImageDraw

from jaxcolor import images, runs
from jaxcolor.data import pipeline


def parse_run(text: str):
    name, _, rest = text.rpartition("=")  # the last "=": a label may hold one, a path not
    rest, _, temperature = rest.partition(":")
    workdir, _, step = rest.partition("@")
    return name, workdir, int(step) if step else None, float(temperature) if temperature else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("runs", nargs="+", metavar="NAME=RUN[@STEP][:T]")
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--scale", type=int, default=1, help="integer upscaling of each tile")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    specs = [parse_run(r) for r in args.runs]
    config = runs.read_config(specs[0][1])
    records = pipeline.eval_records(config.data, config.data.test_split)[: args.images]
    batch = next(pipeline.eval_batches(config.data, config.data.test_split, len(records),
                                       records=records))
    rows = [("truth", images.rgb_from_model(batch["L"], batch["ab"])),
            ("gray", images.rgb_from_model(batch["L"], np.zeros_like(batch["ab"])))]
    for name, workdir, step, temperature in specs:
        model = runs.load_colorizer(workdir, step, temperature)
        rows.append((name, images.rgb_from_model(batch["L"], model.predict_ab(batch["L"]))))
    n, h, w, _ = rows[0][1].shape
    s, pad, label = args.scale, 2, 96
    h, w = h * s, w * s
    grid = np.full((len(rows) * (h + pad) + pad, label + n * (w + pad) + pad, 3), 255, np.uint8)
    canvas = Image.fromarray(grid)
    draw = ImageDraw.Draw(canvas)
    for i, (name, tiles) in enumerate(rows):
        y = pad + i * (h + pad)
        draw.text((4, y + h // 2 - 6), name, fill=(0, 0, 0))
        for j in range(n):
            tile = Image.fromarray(tiles[j]).resize((w, h), Image.NEAREST)
            canvas.paste(tile, (label + pad + j * (w + pad), y))
    canvas.save(args.out, optimize=True)
    print(f"wrote {args.out}: {len(rows)} rows x {n} test images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
