"""Where examples come from: a list of records per split, each one cheap to describe.

A record is a small dict (a file path, or a sample photo and a crop index); decoding happens later,
in the transforms, inside grain's workers. Listing is deterministic so that every host of a
multi-host run, and every rerun, sees the same order before its seeded shuffle.

Split strings follow TFDS: a name (`train`, `validation` or its alias `val`, `test`), a slice
(`[:10%]`, `[10%:25%]`, `[25%:]`, `[100:200]`), or both (`train[:50%]`). A name picks, in this
order: the split's subfolder of an image-folder layout (`DIR/train/**`, `DIR/val/**` or
`DIR/validation/**`, `DIR/test/**`, as torchvision's and TFDS's ImageFolder), CelebA's
list_eval_partition.txt, or else the fractions of DEFAULT_NAMED_SLICES; the slice applies inside
it. A split without a name slices the whole folder. The tfds source hands its split strings to
TFDS unchanged (its datasets name their own splits).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import os
import re
import threading
import time
from typing import Any

import numpy as np

from jaxcolor.data import shards

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
SPLIT_NAMES = ("train", "validation", "test")
SPLIT_ALIASES = {"val": "validation"}  # ImageNet's (and Imagenette's) name for its validation set
# The subfolders of an image-folder layout (DIR/SPLIT/CLASS/FILE) each split name reads.
SPLIT_FOLDERS = {"train": ("train",), "validation": ("val", "validation"), "test": ("test",)}
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
    """'train[10%:25%]' -> ('train', '10%', '25%'); '[:100]' -> ('', None, '100'); 'val[:50%]'
    -> ('validation', None, '50%'): the alias is resolved here, so every source reads it alike."""
    match = _SPLIT_RE.match(spec.replace(" ", ""))
    if not match:
        raise ValueError(
            f"split {spec!r}: expected a TFDS-style split such as 'train', '[:10%]', "
            "'[10%:25%]', '[25%:]', '[100:200]' or 'train[:50%]'"
        )
    name = SPLIT_ALIASES.get(match.group("name"), match.group("name"))
    return name, match.group("start"), match.group("stop")


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


def split_folder_counts(files: list[str]) -> dict[str, int]:
    """Image count of each split folder (`train`, `val`, `validation`, `test`) at the top of a
    listing of relative paths; {} when it has none, i.e. not an image-folder layout."""
    known = {folder for folders in SPLIT_FOLDERS.values() for folder in folders}
    counts: dict[str, int] = {}
    for f in files:
        top, sep, _ = f.partition(os.sep)
        if sep and top in known:
            counts[top] = counts.get(top, 0) + 1
    return counts


def split_folder_files(files: list[str], split: str, counts: dict[str, int],
                       root: str) -> list[str]:
    """The files of the named split's folder, class by class in turn (see `interleave`)."""
    name = parse_split(split)[0]
    present = [folder for folder in SPLIT_FOLDERS[name] if folder in counts]
    holds = ", ".join(f"{folder}/ ({n:,} images)" for folder, n in sorted(counts.items()))
    if len(present) > 1:
        both = " and ".join(f"{folder}/" for folder in present)
        raise ValueError(f"split {split!r}: {root!r} holds both {both} ({holds}); expected one "
                         f"{name} folder (rename or remove the other)")
    if not present:
        raise ValueError(f"split {split!r}: {root!r} holds the split folders {holds} but no "
                         f"{' or '.join(f + '/' for f in SPLIT_FOLDERS[name])}; expected one, or "
                         "a slice of another split, e.g. 'validation[50%:]'")
    prefix = present[0] + os.sep
    return interleave([f for f in files if f.startswith(prefix)])


def interleave(files: list[str]) -> list[str]:
    """Sorted files, reordered to take one file of each folder (class) in turn, folders in sorted
    order: a split folder sorted by path is sorted by class (Imagenette's val/ is), so a slice
    such as `val[:50%]` or `train[:1000]` would hold the first classes only; this way every slice
    holds every class in equal parts (while the smallest class lasts). Deterministic."""
    by_folder: dict[str, list[str]] = {}
    for f in files:
        by_folder.setdefault(os.path.dirname(f), []).append(f)
    columns = [by_folder[folder] for folder in sorted(by_folder)]
    longest = max((len(c) for c in columns), default=0)
    return [c[i] for i in range(longest) for c in columns if i < len(c)]


def select_split(files: list[str], split: str, partition: dict[str, str] | None,
                 root: str = "the folder") -> list[str]:
    """The files of one split, given the sorted listing and CelebA partition codes (or None);
    `root` names the folder in errors.

    Shared by the folder and shards sources, so a split string selects the same photos in both.
    Split folders come before a partition file: they are the folder's own layout, while the
    partition file may sit one level above it.
    """
    name, start, stop = parse_split(split)
    if name:
        if name not in SPLIT_NAMES:
            raise ValueError(f"split {split!r}: name must be one of {SPLIT_NAMES} (or 'val') "
                             "or empty")
        counts = split_folder_counts(files)
        if counts:
            files = split_folder_files(files, split, counts, root)
        elif partition is not None:
            code = CELEBA_PARTITIONS[name]
            files = [f for f in files if partition.get(os.path.basename(f)) == code]
        else:
            _, s0, s1 = parse_split(DEFAULT_NAMED_SLICES[name])
            files = apply_slice(files, s0, s1)
    return apply_slice(files, start, stop)


def folder_records(root: str, split: str, files: list[str] | None = None) -> list[dict[str, Any]]:
    """Records of one split of an image folder, in deterministic order (`files`: its listing,
    when the caller has it already)."""
    files = list_image_files(root) if files is None else files
    partition = _celeba_partition(root) if parse_split(split)[0] else None
    return [{"path": os.path.join(root, f)} for f in select_split(files, split, partition, root)]


def shards_records(root: str, split: str, crop: int, image_size: int) -> list[dict[str, Any]]:
    """Records of one split of a `prepare shards` directory: the same photos as the folder
    source would select from the original folder, less those that could not be read."""
    manifest = shards.read_manifest(root)
    shards.check_matches(manifest, root, crop, image_size)
    index = dict(manifest["files"])
    names = select_split([name for name, _ in manifest["files"]], split, manifest["partition"],
                         root)
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


# ---------------------------------------------------------------------------------------------
# Data hygiene: gray and near-gray photos out of the training split (data.min_colorfulness)

COLORFULNESS_SIDE = 64  # the thumbnail the colorfulness is measured on, pixels a side at most


def colorfulness(rgb: np.ndarray) -> float:
    """Hasler and Suesstrunk's (2003) colorfulness of (H, W, 3) 0-255 RGB: with rg = R - G and
    yb = (R + G) / 2 - B, sqrt(std(rg)^2 + std(yb)^2) + 0.3 sqrt(mean(rg)^2 + mean(yb)^2). 0 for
    any gray image, such as a 1-channel JPEG converted to RGB; BigColor drops photos under 15.
    The evaluation's CF (`jaxcolor.metrics.colorfulness`), in NumPy: it runs per file, in the
    listing's threads, with no accelerator to dispatch to."""
    rgb = np.asarray(rgb, np.float64)
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def file_colorfulness(path: str) -> float | None:
    """The colorfulness of an image file, on a thumbnail of COLORFULNESS_SIDE pixels a side at
    most (a JPEG is decoded at a reduced scale: about 0.7 ms for a 224x224 one, against 2.7 ms
    at full size; within about 1 of the full-size value on Imagenette). The same whatever
    config.data.crop and image_size are, so a 64 and a 128 run train on the same photos. None
    if the file cannot be read: it stays in, for the pipeline to skip and count as unreadable."""
    from PIL import Image

    from jaxcolor.data import transforms  # imports this module: not at the top

    try:
        with Image.open(path) as img:
            img.draft(img.mode, (COLORFULNESS_SIDE, COLORFULNESS_SIDE))
            thumb = transforms.to_rgb(img)
        thumb.thumbnail((COLORFULNESS_SIDE, COLORFULNESS_SIDE))
        return colorfulness(np.asarray(thumb))
    except Exception:  # noqa: BLE001 - unreadable here is unreadable in the pipeline too
        return None


def files_colorfulness(paths: list[str]) -> list[float | None]:
    """`file_colorfulness` of each path, in order: computed in a thread pool (PIL decodes
    without the GIL) and kept for the life of the process, keyed by path, size and mtime, so
    the several listings of one start (run record, ab prior, training stream) measure once."""
    keys = []
    for path in paths:
        try:
            st = os.stat(path)
            keys.append((path, st.st_size, st.st_mtime_ns))
        except OSError:
            keys.append((path, -1, -1))
    missing = list(dict.fromkeys(k for k in keys if k not in _COLORFULNESS))
    if missing:
        workers = min(16, os.cpu_count() or 1)
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            for key, value in zip(missing, pool.map(file_colorfulness, [k[0] for k in missing])):
                _COLORFULNESS[key] = value
    return [_COLORFULNESS[k] for k in keys]


_COLORFULNESS: dict[tuple[str, int, int], float | None] = {}
_REPORTED: set[tuple] = set()


def filters_colorfulness(data_config, split: str) -> bool:
    """Whether `split` of this config drops photos below config.data.min_colorfulness: the
    training split only. The evaluation splits are never filtered: their scores must stay
    comparable with those of other work on the same splits, which score every photo, gray
    ones included (a colorizer is judged on what users give it)."""
    threshold = float(data_config.get("min_colorfulness", 0.0) or 0.0)
    if threshold <= 0.0:
        return False
    if data_config.source != "folder":
        raise ValueError(f"config.data.min_colorfulness={threshold:g}: only the folder source "
                         f"drops gray photos; expected 0 with config.data.source="
                         f"{data_config.source!r}")
    if split != data_config.train_split:
        return False
    for field in ("val_split", "test_split"):
        if data_config[field] == split:
            raise ValueError(f"config.data.min_colorfulness={threshold:g} filters the training "
                             f"split only, and config.data.{field}={split!r} is the same split; "
                             "expected distinct splits, or min_colorfulness 0")
    return True


def colorful_records(records: list[dict[str, Any]], threshold: float,
                     where: str) -> list[dict[str, Any]]:
    """The records whose file's colorfulness is at least `threshold` (unreadable files kept),
    in their order; logs how many were dropped, once per process and folder, as a warning: that
    is the level `python -m jaxcolor.train` shows (absl's verbosity hides INFO lines).

    Done here, when the records are listed, rather than in the grain pipeline: measured once per
    file and process (6 s for Imagenette's 9,469 training photos on 2 busy cores) rather than at
    every epoch; the dropped photos are out of the record list itself, so the epoch, the shuffle,
    the ab prior and run.json's train count and digest are those of the photos trained on, and
    the number dropped is known, and logged, before the first step; the count of unreadable
    files stays what it says. Deterministic: it depends on the files' pixels only. It writes
    nothing: never into the user's data folder."""
    started = time.perf_counter()
    values = files_colorfulness([r["path"] for r in records])
    kept = [r for r, v in zip(records, values) if v is None or v >= threshold]
    gray = sum(v == 0.0 for v in values)
    key = (where, threshold, len(records), len(kept))
    if key not in _REPORTED:
        _REPORTED.add(key)
        log.warning("config.data.min_colorfulness=%g: dropped %d of %d training images of %s "
                    "(%d of them gray, colorfulness 0; measured in %.1f s)", threshold,
                    len(records) - len(kept), len(records), where, gray,
                    time.perf_counter() - started)
    return kept


def records_for(data_config, split: str) -> list[dict[str, Any]]:
    """The records of `split` for the configured source (the training split of a folder less
    its gray photos, with config.data.min_colorfulness > 0: see `colorful_records`)."""
    source = data_config.source
    filtered = filters_colorfulness(data_config, split)
    if source == "sample":
        is_train = parse_split(split)[0] in ("", "train")
        n = data_config.sample_train_examples if is_train else data_config.sample_eval_examples
        return sample_records(split, n)
    if source == "folder":
        if not data_config.path:
            raise ValueError("config.data.source='folder' needs config.data.path=DIR")
        records = folder_records(data_config.path, split)
        if filtered:
            records = colorful_records(records, float(data_config.min_colorfulness),
                                       data_config.path)
        return records
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
