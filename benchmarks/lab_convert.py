"""ms per example of the pipeline's RGB -> LAB conversion: the general `color.rgb_to_lab` (float
input, pow/where/matmul) against the pipeline's uint8 table version, each per example and over a
whole batch at once; one JSON line per (size, variant).

    python benchmarks/lab_convert.py --sizes 64,128 --batch 64
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def general(rgb):
    """The conversion the pipeline used before: color.rgb_to_lab on float32, then scale."""
    import numpy as np

    from jaxcolor import color

    lab = color.rgb_to_lab(rgb.astype(np.float32) / 255.0)
    return {"L": lab[..., :1] / np.float32(100.0), "ab": lab[..., 1:] / np.float32(128.0)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", default="64,128")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    import numpy as np

    from jaxcolor.data import transforms

    rng = np.random.default_rng(0)
    for size in (int(s) for s in args.sizes.split(",")):
        batch = rng.integers(0, 256, (args.batch, size, size, 3), dtype=np.uint8)
        for name, fn in (("general", general), ("uint8_table", transforms.to_model_arrays)):
            for mode in ("per_example", "per_batch"):
                best = float("inf")
                for _ in range(args.repeats):
                    t = time.perf_counter()
                    if mode == "per_example":
                        for img in batch:
                            fn(img)
                    else:
                        fn(batch)
                    best = min(best, time.perf_counter() - t)
                print(json.dumps({"size": size, "variant": name, "mode": mode,
                                  "ms_per_example_best_of": best / args.batch * 1e3,
                                  "repeats": args.repeats,
                                  "loadavg": [round(x, 2) for x in os.getloadavg()]}), flush=True)


if __name__ == "__main__":
    main()
