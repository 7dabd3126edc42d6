"""Bytes and read+decode cost per image of each shard record encoding; one JSON line per encoding.

Prepares the first --n photos of a folder once (decode, center crop-or-pad, resize, as
`prepare shards`), writes them as ArrayRecord shards with each encoding and ArrayRecord writer
option, then reads --reads random records through grain's ArrayRecordDataSource and decodes them
to (size, size, 3) uint8, in this process.

    python benchmarks/shard_formats.py --crop 75 --size 64 --n 2000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_PATH = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "celeba-10k", "img_align_celeba"))

# (encoding, ArrayRecord writer options)
VARIANTS = [
    ("raw", "group_size:1"),  # ArrayRecord's default chunk compression (zstd:3)
    ("raw", "group_size:1,uncompressed"),
    ("png", "group_size:1"),
    ("png", "group_size:1,uncompressed"),
]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--path", default=DEFAULT_PATH)
    p.add_argument("--crop", type=int, default=75)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--reads", type=int, default=2000)
    args = p.parse_args(argv)
    sys.path.insert(0, ROOT)
    import grain
    import numpy as np
    from array_record.python.array_record_module import ArrayRecordWriter

    from jaxcolor.data import shards, sources, transforms

    files = sources.list_image_files(args.path)[: args.n]
    t = time.perf_counter()
    images = [transforms.resize(transforms.center_crop_or_pad(
        transforms.decode(os.path.join(args.path, f)), args.crop), args.size) for f in files]
    prep_ms = (time.perf_counter() - t) / len(files) * 1e3
    jpeg_bytes = sum(os.path.getsize(os.path.join(args.path, f)) for f in files) / len(files)
    rng = np.random.default_rng(0)
    keys = rng.integers(0, len(images), args.reads)
    with tempfile.TemporaryDirectory() as tmp:
        for encoding, options in VARIANTS:
            path = os.path.join(tmp, f"{encoding}-{len(options)}.array_record")
            t = time.perf_counter()
            w = ArrayRecordWriter(path, options)
            for img in images:
                w.write(shards.encode(img, encoding))
            w.close()
            write_ms = (time.perf_counter() - t) / len(images) * 1e3
            src = grain.sources.ArrayRecordDataSource([path])
            src[0]
            t = time.perf_counter()
            for k in keys:
                src[int(k)]
            read_ms = (time.perf_counter() - t) / len(keys) * 1e3
            t = time.perf_counter()
            for k in keys:
                out = shards.decode(src[int(k)], encoding, args.size)
            total_ms = (time.perf_counter() - t) / len(keys) * 1e3
            assert out.shape == (args.size, args.size, 3)
            print(json.dumps({
                "encoding": encoding, "writer_options": options, "crop": args.crop,
                "size": args.size, "images": len(images),
                "bytes_per_image": os.path.getsize(path) / len(images),
                "source_jpeg_bytes_per_image": jpeg_bytes,
                "encode_write_ms": write_ms, "read_ms": read_ms, "read_decode_ms": total_ms,
                "jpeg_decode_crop_resize_ms": prep_ms,
                "loadavg": [round(x, 2) for x in os.getloadavg()]}), flush=True)


if __name__ == "__main__":
    main()
