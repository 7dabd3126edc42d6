"""Time per batch of the device-side augmentation (`config.data.augment_on = "device"`) on
whatever backend JAX has; one JSON line.

Times the jitted `device_augment.to_model_batch` (rotation + flip + RGB -> LAB of a uint8 batch)
and, for the split, the jitted LAB conversion alone, each as the median of --steps calls after
--warmup, every call waited for with block_until_ready. The batch is already on the device: the
host -> device transfer of the uint8 batch (a quarter of the float32 L, ab bytes) is not timed.

    python benchmarks/device_augment.py --batch 256 --size 128
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def median_seconds(fn, arg, steps: int, warmup: int) -> tuple[float, float]:
    """(median seconds per call over `steps`, seconds of the first call: compile + run)."""
    t = time.perf_counter()
    fn(arg)["L"].block_until_ready()
    first = time.perf_counter() - t
    for _ in range(warmup):
        fn(arg)["L"].block_until_ready()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn(arg)["L"].block_until_ready()
        times.append(time.perf_counter() - t)
    return statistics.median(times), first


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--rotate", type=float, default=15.0, help="angles uniform in +-this")
    p.add_argument("--steps", type=int, default=20, help="timed calls")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--label", default="")
    args = p.parse_args(argv)
    import jax
    import numpy as np

    from jaxcolor.data import device_augment

    rng = np.random.default_rng(0)
    host = {"rgb": rng.integers(0, 256, (args.batch, args.size, args.size, 3), dtype=np.uint8),
            "degrees": rng.uniform(-args.rotate, args.rotate, args.batch).astype(np.float32),
            "flip": rng.random(args.batch) < 0.5}
    batch = jax.device_put(host)
    augment_s, compile_s = median_seconds(jax.jit(device_augment.to_model_batch), batch,
                                          args.steps, args.warmup)
    lab_s, _ = median_seconds(jax.jit(device_augment.to_model_arrays), batch["rgb"],
                              args.steps, args.warmup)
    out = {"mode": "device_augment", "backend": jax.default_backend(),
           "device_kind": jax.devices()[0].device_kind, "jax_version": jax.__version__,
           "batch": args.batch, "size": args.size, "rotate_degrees": args.rotate,
           "steps": args.steps, "batch_s_median": augment_s, "lab_only_batch_s_median": lab_s,
           "us_per_example": augment_s / args.batch * 1e6,
           "examples_per_s": args.batch / augment_s, "first_call_s": compile_s,
           "uint8_bytes_per_example": args.size * args.size * 3,
           "float32_bytes_per_example": args.size * args.size * 3 * 4,
           "loadavg": [round(x, 2) for x in os.getloadavg()]}
    if args.label:
        out["label"] = args.label
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
