"""Examples/s of the reference work's tf.data input pipeline, for comparison with
`input_pipeline.py`; one JSON line per (crop:size, parallel calls) setting.

The reference's pipeline in TF ops: list the JPEG files, shuffle, repeat, read + decode_jpeg,
random rotation of ±--rotate degrees (bilinear, reflected fill, as Keras' RandomRotation, through
ImageProjectiveTransformV3), resize_with_crop_or_pad to crop, resize to size (bilinear), random
horizontal flip, sRGB -> LAB (the same formulas as jaxcolor.color), L/100 and ab/128, batch,
prefetch. The train split is the same `[25%:]` slice of the sorted file list as the folder
source's. `--parallel` gives num_parallel_calls of the map (0 = tf.data.AUTOTUNE). `cpu_s` is the
process's CPU time over the timed batches (getrusage), `examples_per_cpu_s` the per-core rate.

Needs TensorFlow, which jaxcolor does not: run it from its own environment, e.g.
    python3 -m venv /work/tfvenv && /work/tfvenv/bin/pip install tensorflow-cpu
    /work/tfvenv/bin/python benchmarks/tfdata_pipeline.py --settings 75:64,150:128
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from input_pipeline import time_batches  # noqa: E402  (stdlib-only at import: no jaxcolor, no JAX)

DEFAULT_PATH = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "celeba-10k", "img_align_celeba"))

# jaxcolor.color's constants (sRGB D65, skimage's rounding), repeated to keep this script free of
# jaxcolor's dependencies.
XYZ_FROM_RGB = [[0.412453, 0.357580, 0.180423],
                [0.212671, 0.715160, 0.072169],
                [0.019334, 0.119193, 0.950227]]
WHITE_D65 = [0.95047, 1.0, 1.08883]


def rgb_to_lab(tf, rgb):
    """float32 sRGB in [0, 1], (..., 3) -> LAB, in TF ops."""
    lin = tf.where(rgb > 0.04045, tf.pow((tf.maximum(rgb, 0.04045) + 0.055) / 1.055, 2.4),
                   rgb / 12.92)
    xyz = tf.linalg.matvec(tf.constant(XYZ_FROM_RGB, tf.float32), lin) / tf.constant(WHITE_D65)
    f = tf.where(xyz > 0.008856, tf.pow(tf.maximum(xyz, 0.008856), 1.0 / 3.0),
                 7.787 * xyz + 16.0 / 116.0)
    fx, fy, fz = f[..., 0], f[..., 1], f[..., 2]
    return tf.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)


def rotate(tf, image, degrees):
    """Keras RandomRotation's transform: bilinear, reflected fill, about the center."""
    h = tf.cast(tf.shape(image)[0], tf.float32)
    w = tf.cast(tf.shape(image)[1], tf.float32)
    angle = degrees * math.pi / 180.0
    c, s = tf.cos(angle), tf.sin(angle)
    x_off = ((w - 1) - (c * (w - 1) - s * (h - 1))) / 2.0
    y_off = ((h - 1) - (s * (w - 1) + c * (h - 1))) / 2.0
    transform = tf.stack([c, -s, x_off, s, c, y_off, 0.0, 0.0])[None]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=transform, output_shape=tf.shape(image)[:2],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="REFLECT")
    return out[0]


def make_dataset(tf, files, crop, size, batch, rotate_degrees, parallel, seed=0):
    def load(path):
        rgb = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        rgb = tf.cast(rgb, tf.float32) / 255.0
        if rotate_degrees > 0:
            rgb = rotate(tf, rgb, tf.random.uniform([], -rotate_degrees, rotate_degrees))
        rgb = tf.image.resize_with_crop_or_pad(rgb, crop, crop)
        rgb = tf.image.resize(rgb, (size, size), method="bilinear")
        rgb = tf.image.random_flip_left_right(rgb)
        lab = rgb_to_lab(tf, tf.clip_by_value(rgb, 0.0, 1.0))
        return {"L": lab[..., :1] / 100.0, "ab": lab[..., 1:] / 128.0}

    calls = tf.data.AUTOTUNE if parallel <= 0 else parallel
    ds = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=seed).repeat()
    return ds.map(load, num_parallel_calls=calls).batch(batch, drop_remainder=True).prefetch(
        tf.data.AUTOTUNE)


def _cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--path", default=DEFAULT_PATH)
    p.add_argument("--settings", default="75:64,150:128")
    p.add_argument("--parallel", default="1,0", help="num_parallel_calls values; 0 = AUTOTUNE")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--batches", type=int, default=10)
    p.add_argument("--warmup_batches", type=int, default=2)
    p.add_argument("--rotate", type=float, default=15.0)
    p.add_argument("--label", default="")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    names = sorted(f for f in os.listdir(args.path) if f.lower().endswith((".jpg", ".jpeg")))
    names = names[round(len(names) * 0.25):]  # the folder source's train split, [25%:]
    files = [os.path.join(args.path, f) for f in names]
    for setting in args.settings.split(","):
        crop, size = (int(v) for v in setting.split(":"))
        for parallel in (int(v) for v in args.parallel.split(",")):
            t0 = time.perf_counter()
            it = iter(make_dataset(tf, files, crop, size, args.batch, args.rotate, parallel))
            batch, first, times, total, cpu = time_batches(it, t0, args.warmup_batches,
                                                           args.batches, _cpu_s)
            n = args.batch * args.batches
            out = {"mode": "pipeline", "framework": "tf.data", "tf_version": tf.__version__,
                   "path": args.path, "crop": crop, "size": size, "batch": args.batch,
                   "rotate_degrees": args.rotate, "num_parallel_calls": parallel or "AUTOTUNE",
                   "batches": args.batches, "examples_per_s": n / total, "cpu_s": cpu,
                   "examples_per_cpu_s": n / max(cpu, 1e-9),
                   "batch_s_median": statistics.median(times), "first_batch_s": first,
                   "shapes": {k: list(v.shape) for k, v in batch.items()},
                   "cpu_count": os.cpu_count(),
                   "loadavg": [round(x, 2) for x in os.getloadavg()]}
            if args.label:
                out["label"] = args.label
            print(json.dumps(out), flush=True)
            del it


if __name__ == "__main__":
    main()
