"""ArrayRecord shards of pre-cropped, pre-resized images: the on-disk format and its reader.

`python -m jaxcolor.prepare shards` decodes, crops and resizes every photo once and writes the
results here, so that training reads fixed-size pixels instead of decoding and resizing JPEGs on
every epoch. A shard directory holds:

    shard-00000-of-00008.array_record ...   one record per readable photo, in listing order
    manifest.json                           what is in them (written last, atomically)

Each record is one image, encoded as `encoding` says: "raw" (the H*W*3 uint8 bytes, row-major
RGB; decoding is a `np.frombuffer`) or "png" (lossless, about half the bytes, costs a PNG decode).
The manifest keeps the full sorted file listing of the source folder, with each file's global
record index (null for files that could not be read) and the CelebA partition codes if the folder
had them, so split strings select exactly the images the folder source would have.
"""

from __future__ import annotations

import functools
import io
import json
import os
from typing import Any

import numpy as np

MANIFEST = "manifest.json"
FORMAT = "jaxcolor-shards"
VERSION = 1
ENCODINGS = ("raw", "png")
# grain's ArrayRecordDataSource wants group_size:1 (one record per chunk) for fast random access.
# Uncompressed: ArrayRecord's default zstd saved 7% of raw pixels' bytes and cost 2.5x the read
# time; PNG data does not compress further (benchmarks/shard_formats.py, RESULTS.md).
WRITER_OPTIONS = "group_size:1,uncompressed"


def shard_name(i: int, n: int) -> str:
    return f"shard-{i:05d}-of-{n:05d}.array_record"


def encode(rgb: np.ndarray, encoding: str) -> bytes:
    """(H, W, 3) uint8 -> record bytes."""
    if encoding == "raw":
        return np.ascontiguousarray(rgb, np.uint8).tobytes()
    if encoding == "png":
        from PIL import Image

        buf = io.BytesIO()
        # compress_level 1: PNG's fastest zlib setting; the decode cost is the same at any level.
        Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)
        return buf.getvalue()
    raise ValueError(f"shard encoding {encoding!r}: expected one of {ENCODINGS}")


def decode(data: bytes, encoding: str, size: int) -> np.ndarray:
    """Record bytes -> (size, size, 3) uint8 RGB."""
    if encoding == "raw":
        return np.frombuffer(data, np.uint8).reshape(size, size, 3)
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def read_manifest(root: str) -> dict[str, Any]:
    """The manifest of a shard directory, checked; cached per (directory, mtime)."""
    path = os.path.join(root, MANIFEST)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"config.data.path={root!r}: no {MANIFEST}; expected a directory written by "
            "`python -m jaxcolor.prepare shards --source folder:PATH --out DIR` (an unfinished "
            "run writes the manifest last: rerun it to resume)"
        )
    return _read_manifest(path, os.path.getmtime(path))


@functools.lru_cache(maxsize=8)
def _read_manifest(path: str, mtime: float) -> dict[str, Any]:
    with open(path) as f:
        manifest = json.load(f)
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise ValueError(
            f"{path}: expected format {FORMAT!r} version {VERSION}, got "
            f"{manifest.get('format')!r} version {manifest.get('version')!r}"
        )
    return manifest


def check_matches(manifest: dict, root: str, crop: int, image_size: int) -> None:
    """Shards hold pixels already cropped and resized: the config must ask for the same ones."""
    if (manifest["crop"], manifest["size"]) != (crop, image_size):
        raise ValueError(
            f"shards in {root!r} were prepared with --crop {manifest['crop']} --size "
            f"{manifest['size']}, but config.data.crop={crop} and config.data.image_size="
            f"{image_size}; set those to match, or prepare new shards with --crop {crop} "
            f"--size {image_size}"
        )


@functools.lru_cache(maxsize=8)
def _reader(root: str, pid: int):
    """One ArrayRecord data source per shard directory and process (opened lazily after a fork or
    spawn, so grain's worker processes never share a reader's file handles)."""
    import grain

    manifest = read_manifest(root)
    paths = [os.path.join(root, s["name"]) for s in manifest["shards"]]
    return grain.sources.ArrayRecordDataSource(paths)


def load(record: dict) -> np.ndarray:
    """A shards record -> (size, size, 3) uint8 RGB."""
    root = record["shards"]
    manifest = read_manifest(root)
    data = _reader(root, os.getpid())[record["index"]]
    return decode(data, manifest["encoding"], manifest["size"])
