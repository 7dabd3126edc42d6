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
had them, so split strings select exactly the images the folder source would have, and each
shard's record count, size and SHA-256.

The reader opens each shard as its own ArrayRecord data source, lazily and once per process (so
grain's worker processes never share file handles), and maps a global record index to (shard,
position) by the manifest's counts. A damaged shard (a size that differs from the manifest, or a
record ArrayRecord cannot read) fails only its own records, with a `DamagedShardError` (an
OSError) naming the shard's file and the `prepare shards ... --verify` command that rewrites it;
the pipeline skips such records in evaluation and stops training with that message.
"""

from __future__ import annotations

import bisect
import functools
import io
import itertools
import json
import logging
import os
import threading
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

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


def _manifest_stamp(root: str) -> tuple[str, float]:
    """(manifest path, its mtime): the key of everything cached about a directory, so that a
    directory prepared again is read again."""
    path = os.path.join(root, MANIFEST)
    try:
        return path, os.path.getmtime(path)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"config.data.path={root!r}: no {MANIFEST}; expected a directory written by "
            "`python -m jaxcolor.prepare shards --source folder:PATH --out DIR` (an unfinished "
            "run writes the manifest last: rerun it to resume)"
        ) from None


def read_manifest(root: str) -> dict[str, Any]:
    """The manifest of a shard directory, checked; cached per (directory, mtime)."""
    return _read_manifest(*_manifest_stamp(root))


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


class DamagedShardError(OSError):
    """A shard's file no longer matches its manifest row, or ArrayRecord cannot read it. An
    OSError, like other unreadable files: evaluation skips the record, training stops with it."""


def reprepare_command(manifest: dict, root: str) -> str:
    """The command that checks every shard of `root` and rewrites the damaged ones."""
    return (f"python -m jaxcolor.prepare shards --source {manifest['source']} --out {root} "
            f"--crop {manifest['crop']} --size {manifest['size']} --encoding "
            f"{manifest['encoding']} --num_shards {len(manifest['shards'])} --verify")


def _open_shard(path: str, row: dict):
    """An ArrayRecord data source for one shard, or why it is damaged (a string). The size is
    compared with the manifest here; the file's structure and chunk hashes are ArrayRecord's to
    check as records are read. Given `path[0:count]` (the count from the manifest), grain's
    source opens the file on its first read; given a bare path it would open it now to count
    records, in a thread pool (which fails, looking like damage, while Python shuts down)."""
    import grain

    try:
        size = os.path.getsize(path)
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    if size != row["bytes"]:
        return f"{size} bytes, the manifest says {row['bytes']}"
    return grain.sources.ArrayRecordDataSource(f"{path}[0:{row['count']}]")


class _ShardReaders:
    """The shards of one directory, each opened on its first read as its own ArrayRecord data
    source, so that a damaged shard fails only its own records, with its name in the error.

    One data source over all the shards (grain's, as this used before) opens every file to count
    records before reading any: one truncated shard then made every record of the directory
    unreadable, and the error did not say which file. Here the global index is mapped to
    (shard, position) by bisecting the manifest's cumulative counts, as grain's source does.
    """

    def __init__(self, root: str, manifest: dict):
        self.root, self.manifest = root, manifest
        self.rows = manifest["shards"]
        self.ends = list(itertools.accumulate(row["count"] for row in self.rows))
        self.count = self.ends[-1] if self.ends else 0
        # Per shard: None (not opened yet), a data source, or the message of its damage.
        self.sources: list[Any] = [None] * len(self.rows)
        self.logged: set[int] = set()
        self.lock = threading.Lock()

    def load(self, index: int) -> np.ndarray:
        """Global record index -> (size, size, 3) uint8 RGB, or DamagedShardError."""
        if not 0 <= index < self.count:
            raise IndexError(f"record {index} of {self.root}: it holds {self.count} records")
        i = bisect.bisect_right(self.ends, index)
        source = self.sources[i] if self.sources[i] is not None else self._open(i)
        if isinstance(source, str):
            raise DamagedShardError(source)
        try:
            data = source[index - self._start(i)]
            return decode(data, self.manifest["encoding"], self.manifest["size"])
        except Exception as exc:  # noqa: BLE001 - riegeli reports corruption as RuntimeError
            why = f"record {index}: {type(exc).__name__}: {exc}"
            raise DamagedShardError(self._report(i, why)) from exc

    def _start(self, i: int) -> int:
        return self.ends[i - 1] if i else 0

    def _open(self, i: int):
        """Opens shard i once per process, thread-safely (grain reads with threads). A size
        that differs from the manifest stays the shard's answer; read errors are per record."""
        with self.lock:
            if self.sources[i] is None:
                source = _open_shard(os.path.join(self.root, self.rows[i]["name"]), self.rows[i])
                if isinstance(source, str):
                    source = self._report(i, f"{source}; its records {self._start(i)}.."
                                              f"{self.ends[i] - 1} cannot be read")
                self.sources[i] = source
            return self.sources[i]

    def _report(self, i: int, why: str) -> str:
        """The message of damage to shard i, logged the first time (per process) it is met: the
        pipeline's own skip lines name records, not the shard they are in."""
        path = os.path.join(self.root, self.rows[i]["name"])
        message = (f"damaged shard {path} ({why}); re-prepare it (only damaged shards are "
                   f"rewritten): {reprepare_command(self.manifest, self.root)}")
        if i not in self.logged:
            self.logged.add(i)
            log.warning("%s", message)
        return message


@functools.lru_cache(maxsize=8)
def _reader(root: str, pid: int, stamp: tuple[str, float]) -> _ShardReaders:
    """The shard readers of a directory for this process (opened lazily after a fork or spawn, so
    grain's worker processes never share a reader's file handles) and this manifest version."""
    return _ShardReaders(root, _read_manifest(*stamp))


def load(record: dict) -> np.ndarray:
    """A shards record -> (size, size, 3) uint8 RGB; DamagedShardError names a damaged shard."""
    root = record["shards"]
    return _reader(root, os.getpid(), _manifest_stamp(root)).load(record["index"])
