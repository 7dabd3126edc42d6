"""Where examples come from: a list of records per split, each one cheap to describe.

A record is a small dict (a file path, or a sample photo and a crop index); decoding happens later,
in the transforms, inside grain's workers. Listing is deterministic so that every host of a
multi-host run, and every rerun, sees the same order before its seeded shuffle.

Split strings follow TFDS: a name (`train`, `validation`, `test`), a slice (`[:10%]`,
`[10%:25%]`, `[25%:]`, `[100:200]`), or both (`train[:50%]`).
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from typing import Any

from jaxcolor.data import shards

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
SPLIT_NAMES = ("train", "validation", "test")
# Fractions used for named splits when a folder carries no partition file: the reference work's
# TFDS slices (test [:10%], validation [10%:25%], train [25%:]).
DEFAULT_NAMED_SLICES = {"test": "[:10%]", "validation": "[10%:25%]", "train": "[25%:]"}
# CelebA's list_eval_partition.txt codes.
CELEBA_PARTITIONS = {"train": "0", "validation": "1", "test": "2"}

# The color photographs of everyday scenes shipped inside scikit-image's `skimage/data` folder (no
# download needed; its microscopy, retina and deep-field images are left out: their colors teach
# nothing about photographs). The cat is held out whole, so no crop of it is ever trained on.
SAMPLE_PHOTOS = {
    "train": (
        "astronaut.png",
        "coffee.png",
        "motorcycle_left.png",
        "motorcycle_right.png",
        "rocket.jpg",
    ),
    "validation": ("chelsea.png",),
    "test": ("chelsea.png",),
}

_SPLIT_RE = re.compile(r"^(?P<name>[A-Za-z_]*)(\[(?P<start>-?\d+%?)?:(?P<stop>-?\d+%?)?\])?$")


def parse_split(spec: str) -> tuple[str, str | None, str | None]:
    """'train[10%:25%]' -> ('train', '10%', '25%'); '[:100]' -> ('', None, '100')."""
    match = _SPLIT_RE.match(spec.replace(" ", ""))
    if not match:
        raise ValueError(
            f"split {spec!r}: expected a TFDS-style split such as 'train', '[:10%]', "
            "'[10%:25%]', '[25%:]', '[100:200]' or 'train[:50%]'"
        )
    return match.group("name"), match.group("start"), match.group("stop")


def _bound(value: str | None, n: int, default: int) -> int:
    if value is None:
        return default
    if value.endswith("%"):
        pct = int(value[:-1])
        if not -100 <= pct <= 100:
            raise ValueError(f"split bound {value!r} is outside -100%..100%")
        k = int(round(abs(pct) * n / 100))
        return k if pct >= 0 else n - k
    k = int(value)
    return max(0, min(n, k if k >= 0 else n + k))


def apply_slice(items: list, start: str | None, stop: str | None) -> list:
    n = len(items)
    return items[_bound(start, n, 0) : _bound(stop, n, n)]


def list_image_files(root: str) -> list[str]:
    """All images under `root`, recursively, sorted by relative path (deterministic)."""
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"config.data.path={root!r}: expected a directory of JPEG/PNG images"
        )
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            if name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(os.path.relpath(os.path.join(dirpath, name), root))
    found.sort()
    if not found:
        raise FileNotFoundError(
            f"config.data.path={root!r}: no images ({', '.join(IMAGE_EXTENSIONS)}) found"
        )
    return found


def _celeba_partition(root: str) -> dict[str, str] | None:
    """CelebA's list_eval_partition.txt beside (or above) the image folder, if any."""
    for candidate in (root, os.path.dirname(os.path.normpath(root))):
        path = os.path.join(candidate, "list_eval_partition.txt")
        if os.path.isfile(path):
            with open(path) as f:
                rows = (line.split() for line in f if line.strip())
                return {name: code for name, code in rows}
    return None


def select_split(files: list[str], split: str, partition: dict[str, str] | None) -> list[str]:
    """The files of one split, given the sorted listing and CelebA partition codes (or None).

    Shared by the folder and shards sources, so a split string selects the same photos in both.
    """
    name, start, stop = parse_split(split)
    if name:
        if name not in SPLIT_NAMES:
            raise ValueError(f"split {split!r}: name must be one of {SPLIT_NAMES} or empty")
        if partition is not None:
            code = CELEBA_PARTITIONS[name]
            files = [f for f in files if partition.get(os.path.basename(f)) == code]
        else:
            _, s0, s1 = parse_split(DEFAULT_NAMED_SLICES[name])
            files = apply_slice(files, s0, s1)
    return apply_slice(files, start, stop)


def folder_records(root: str, split: str) -> list[dict[str, Any]]:
    """Records of one split of an image folder, in deterministic order."""
    files = list_image_files(root)
    partition = _celeba_partition(root) if parse_split(split)[0] else None
    return [{"path": os.path.join(root, f)} for f in select_split(files, split, partition)]


def shards_records(root: str, split: str, crop: int, image_size: int) -> list[dict[str, Any]]:
    """Records of one split of a `prepare shards` directory: the same photos as the folder
    source would select from the original folder, less those that could not be read."""
    manifest = shards.read_manifest(root)
    shards.check_matches(manifest, root, crop, image_size)
    index = dict(manifest["files"])
    names = select_split([name for name, _ in manifest["files"]], split, manifest["partition"])
    return [{"shards": root, "index": index[n], "path": n} for n in names if index[n] is not None]


def tfds_records(name: str, data_dir: str, split: str) -> list[dict[str, Any]]:
    """Records of a prepared TFDS dataset split (TFDS's own split-string semantics)."""
    source = tfds_source(name, data_dir, split)
    key = {"tfds": name, "data_dir": data_dir, "split": split}
    return [dict(key, index=i) for i in range(len(source))]


def tfds_source(name: str, data_dir: str, split: str):
    """`tfds.data_source` of the split, opened once per process (grain's worker processes never
    share a reader's file handles): random access over ArrayRecord files, no TensorFlow at
    training time.

    The first open imports tensorflow_datasets, inside a grain worker process where several read
    threads ask for the source at once. Two threads importing it together can deadlock on
    Python 3.11 (one holds `functools.cached_property`'s lock, shared by all of etils' lazy
    modules, and waits for a module lock that the other holds while it waits for that same
    cached_property lock): this hung a 2-worker pipeline for good, now and then. So the first
    open happens under a lock, in one thread; later calls only read the cache.
    """
    key = (name, data_dir, split)
    source = _TFDS_SOURCES.get(key)
    if source is None:
        with _TFDS_OPEN_LOCK:
            source = _TFDS_SOURCES.get(key)
            if source is None:
                source = _TFDS_SOURCES[key] = _open_tfds_source(name, data_dir, split)
    return source


_TFDS_SOURCES: dict[tuple, Any] = {}
_TFDS_OPEN_LOCK = threading.Lock()


def _forget_tfds_sources():
    """In a forked child: its own readers (no file handles shared with the parent), and a fresh
    lock (another thread of the parent may have held it at the fork)."""
    global _TFDS_SOURCES, _TFDS_OPEN_LOCK
    _TFDS_SOURCES, _TFDS_OPEN_LOCK = {}, threading.Lock()


os.register_at_fork(after_in_child=_forget_tfds_sources)


def _open_tfds_source(name: str, data_dir: str, split: str):
    try:
        import tensorflow_datasets as tfds
    except ImportError as exc:
        raise ImportError(
            "config.data.source='tfds' needs tensorflow-datasets: pip install 'jaxcolor[tfds]'"
        ) from exc
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir or None)
    except NotImplementedError as exc:  # raised for datasets prepared as TFRecord
        raise ValueError(
            f"TFDS dataset {name!r} in {data_dir!r} is not in ArrayRecord format, which "
            "tfds.data_source needs for random access. Convert it once with `python -m "
            f"jaxcolor.prepare tfds-convert --name {name} --data_dir {data_dir or 'DIR'}` "
            "(TFDS's convert_format; that step alone needs tensorflow and apache-beam)"
        ) from exc


def tfds_load(record: dict[str, Any]):
    """A TFDS record -> the example's 'image' feature as (H, W, C) uint8."""
    source = tfds_source(record["tfds"], record["data_dir"], record["split"])
    example = source[record["index"]]
    if "image" not in example:
        raise KeyError(
            f"TFDS dataset {record['tfds']!r} has no 'image' feature (features: {sorted(example)})"
        )
    return example["image"]


def sample_dir() -> str:
    import skimage.data

    return os.path.dirname(skimage.data.__file__)


def sample_records(split: str, num_examples: int) -> list[dict[str, Any]]:
    """`num_examples` crop records cycling over the split's whole photos."""
    name, start, stop = parse_split(split)
    photos = SAMPLE_PHOTOS.get(name or "train")
    if photos is None:
        raise ValueError(f"sample source split {split!r}: expected one of {SPLIT_NAMES}")
    records = [
        {"path": os.path.join(sample_dir(), photos[i % len(photos)]), "crop_id": i}
        for i in range(num_examples)
    ]
    return apply_slice(records, start, stop)


def records_for(data_config, split: str) -> list[dict[str, Any]]:
    """The records of `split` for the configured source."""
    source = data_config.source
    if source == "sample":
        is_train = parse_split(split)[0] in ("", "train")
        n = data_config.sample_train_examples if is_train else data_config.sample_eval_examples
        return sample_records(split, n)
    if source == "folder":
        if not data_config.path:
            raise ValueError("config.data.source='folder' needs config.data.path=DIR")
        return folder_records(data_config.path, split)
    if source == "shards":
        if not data_config.path:
            raise ValueError("config.data.source='shards' needs config.data.path=DIR (the --out "
                             "directory of `python -m jaxcolor.prepare shards`)")
        return shards_records(data_config.path, split, data_config.crop, data_config.image_size)
    if source == "tfds":
        if not data_config.name:
            raise ValueError("config.data.source='tfds' needs config.data.name (e.g. celeb_a)")
        return tfds_records(data_config.name, data_config.data_dir, split)
    raise ValueError(
        f"config.data.source={source!r}: expected 'sample', 'folder', 'shards' or 'tfds'"
    )


def digest(records: list[dict[str, Any]]) -> str:
    """A short digest of the record list, to tell datasets apart in run records."""
    h = hashlib.sha256()
    for r in records:
        h.update(repr(sorted(r.items())).encode())
    return h.hexdigest()[:16]
