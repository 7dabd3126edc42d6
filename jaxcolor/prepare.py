"""One-off dataset preparation: `python -m jaxcolor.prepare SUBCOMMAND [options]`.

    shards        decode, crop and resize an image folder once into ArrayRecord shards
                  (the `shards` source), in parallel and resumably
    tfds-convert  convert a prepared TFDS dataset from TFRecord to ArrayRecord (what
                  `tfds.data_source`, hence the `tfds` source, needs)
    ab-prior      count the training split's ab-bin prior and rebalancing weights for the
                  classification loss (`jaxcolor.ab_prior`)

Each subcommand is a function of its argument list, registered in `COMMANDS`; adding one is
adding a function and a row.

`shards` resumes: rerun into the same --out, it keeps each shard finished under the same plan
(its sidecar `SHARD.json` records the plan, size and SHA-256) and writes the rest. A finished
shard is kept only if it still matches its sidecar: the size always (one stat, so a shard
truncated after the run is caught on every rerun), the SHA-256 too with --verify (it reads every
shard: bytes changed in place with the size kept pass unnoticed without it). A shard that
differs is rewritten from its source files, with a line on stderr naming it and what differed,
and the manifest, written last, reports the sizes and digests of the files as they are. With
everything intact and the manifest there, a rerun changes no shard. The reader names a damaged
shard in its errors and suggests exactly this rerun with --verify (`jaxcolor.data.shards`).

    python -m jaxcolor.prepare shards --source folder:/data/img_align_celeba --out /data/shards \\
        --crop 150 --size 128 --workers 2
    python -m jaxcolor.prepare tfds-convert --name celeb_a --data_dir ~/tensorflow_datasets

Exit status: 0 done; 2 a usage error (no or an unknown subcommand, a bad flag, a source that is
not what it says, a package the subcommand needs), one line naming it.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Callable

from jaxcolor import config as config_lib
from jaxcolor.data import shards, sources, transforms

# ----------------------------------------------------------------------------- shards


def _parse_shards_args(argv):
    p = config_lib.command_parser("python -m jaxcolor.prepare shards",
                                  "Write ArrayRecord shards of cropped, resized images.")
    p.add_argument("--source", required=True, help="folder:PATH, an image folder (recursive)")
    p.add_argument("--out", required=True, help="output directory (resumes if it exists)")
    p.add_argument("--crop", type=int, required=True,
                   help="center crop-or-pad side before resizing (config.data.crop); 0 = the "
                        "largest centered square")
    p.add_argument("--size", type=int, required=True, help="side after resizing "
                   "(config.data.image_size)")
    p.add_argument("--num_shards", type=int, default=0, help="0 = one per 2,500 images")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="decoding processes; 0 = in this process")
    p.add_argument("--encoding", choices=shards.ENCODINGS, default="raw",
                   help="raw uint8 (fastest to read) or lossless PNG (smaller)")
    p.add_argument("--verify", action="store_true",
                   help="on resume, also compare each finished shard's SHA-256 with its sidecar "
                        "(reads every shard; without it only sizes are compared)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def _folder_of(source: str) -> str:
    kind, _, path = source.partition(":")
    if kind != "folder" or not path:
        raise ValueError(f"--source {source!r}: expected folder:PATH")
    return path


def process_file(job: tuple[str, int, int, str]) -> tuple[bytes | None, str | None]:
    """(path, crop, size, encoding) -> (record bytes, None) or (None, why it was skipped)."""
    path, crop, size, encoding = job
    try:
        rgb = transforms.decode(path)
    except Exception as exc:  # noqa: BLE001 - every unreadable file is reported, none stops the run
        return None, f"{type(exc).__name__}: {exc}"
    rgb = transforms.resize(transforms.center_crop_or_pad(rgb, crop), size)
    return shards.encode(rgb, encoding), None


def _atomic_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _sidecar(out: str, name: str) -> str:
    return os.path.join(out, name + ".json")


def _complete(out: str, name: str, plan_digest: str) -> dict | None:
    """A shard's sidecar if the shard was finished under the same plan, else None."""
    try:
        with open(_sidecar(out, name)) as f:
            side = json.load(f)
    except (OSError, ValueError):
        return None
    if side.get("plan") != plan_digest or not os.path.isfile(os.path.join(out, name)):
        return None
    return side


def _damage(out: str, side: dict, verify: bool) -> str | None:
    """How a finished shard's file differs from its sidecar, or None if it does not.

    A shard can be truncated or overwritten after its run finished (a full disk, a copy cut
    short), and the sidecar would still call it complete. The size is always compared (one
    stat); the SHA-256 only with `verify`, since it reads the whole directory."""
    path = os.path.join(out, side["name"])
    size = os.path.getsize(path)
    if size != side["bytes"]:
        return f"{size} bytes, its sidecar says {side['bytes']}"
    if verify:
        digest = _sha256(path)
        if digest != side["sha256"]:
            return f"sha256 {digest}, its sidecar says {side['sha256']}"
    return None


class _ShardWriter:
    """Writes one shard to a temporary name; `finish` renames it and writes its sidecar."""

    def __init__(self, out: str, name: str, files: list[str]):
        from array_record.python.array_record_module import ArrayRecordWriter

        self.out, self.name, self.files = out, name, files
        self.tmp = os.path.join(out, name + ".incomplete")
        self.writer = ArrayRecordWriter(self.tmp, shards.WRITER_OPTIONS)
        self.entries: list[list] = []  # [relative path, index in this shard or None]
        self.skipped: list[dict] = []
        self.count = 0

    def add(self, data: bytes | None, error: str | None) -> bool:
        """Adds the next file's result; True once every file of the shard is in."""
        rel = self.files[len(self.entries)]
        if data is None:
            self.entries.append([rel, None])
            self.skipped.append({"path": rel, "error": error})
        else:
            self.writer.write(data)
            self.entries.append([rel, self.count])
            self.count += 1
        return len(self.entries) == len(self.files)

    def finish(self, plan_digest: str) -> dict:
        self.writer.close()
        final = os.path.join(self.out, self.name)
        os.replace(self.tmp, final)
        side = {"plan": plan_digest, "name": self.name, "count": self.count,
                "bytes": os.path.getsize(final), "sha256": _sha256(final),
                "files": self.entries, "skipped": self.skipped}
        _atomic_json(_sidecar(self.out, self.name), side)
        return side


def _map(jobs, workers: int):
    if workers <= 0:
        yield from map(process_file, jobs)
        return
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        yield from pool.imap(process_file, jobs, chunksize=16)


def write_shards(source: str, out: str, crop: int, size: int, num_shards: int = 0,
                 workers: int = 0, encoding: str = "raw", progress: bool = False,
                 verify: bool = False) -> dict:
    """Writes (or finishes) a shard directory; returns its manifest (plus `seconds` and
    `redone`, the shards found damaged and rewritten). Shards already complete under the same
    plan (source listing, crop, size, encoding, shard count) are kept if their size (and with
    `verify` their SHA-256) still matches their sidecar; the others are rewritten."""
    folder = _folder_of(source)
    files = sources.list_image_files(folder)
    partition = sources._celeba_partition(folder)
    if partition is not None:
        listed = {os.path.basename(f) for f in files}
        partition = {k: v for k, v in partition.items() if k in listed}
    n = len(files)
    num_shards = num_shards if num_shards > 0 else max(1, math.ceil(n / 2500))
    num_shards = min(num_shards, n)
    plan = {"source": os.path.abspath(folder), "crop": crop, "size": size, "encoding": encoding,
            "writer_options": shards.WRITER_OPTIONS, "num_shards": num_shards,
            "files": sources.digest([{"f": f} for f in files])}
    plan_digest = hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:16]
    os.makedirs(out, exist_ok=True)
    bounds = [(i * n // num_shards, (i + 1) * n // num_shards) for i in range(num_shards)]
    names = [shards.shard_name(i, num_shards) for i in range(num_shards)]
    done = {name: _complete(out, name, plan_digest) for name in names}
    redone = []
    for name, side in done.items():
        why = side and _damage(out, side, verify)
        if why:
            print(f"shard {os.path.join(out, name)} is damaged ({why}): redoing it",
                  file=sys.stderr)
            done[name] = None
            redone.append(name)
    pending = [i for i, name in enumerate(names) if done[name] is None]
    manifest_path = os.path.join(out, shards.MANIFEST)
    t0 = time.perf_counter()
    if pending:
        if os.path.exists(manifest_path):
            os.remove(manifest_path)  # the directory is being (re)written: not valid until the end
        if len(pending) < num_shards:
            print(f"resuming: {num_shards - len(pending)} of {num_shards} shards already "
                  f"complete in {out}", file=sys.stderr)
        jobs = [(os.path.join(folder, files[k]), crop, size, encoding)
                for i in pending for k in range(*bounds[i])]
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(jobs), desc=f"prepare shards -> {out}", unit="img")
        results = _map(jobs, workers)
        for i in pending:
            writer = _ShardWriter(out, names[i], files[slice(*bounds[i])])
            finished = not writer.files
            while not finished:
                finished = writer.add(*next(results))
                if bar is not None:
                    bar.update(1)
            done[names[i]] = writer.finish(plan_digest)
        if bar is not None:
            bar.close()
        results.close()
    seconds = time.perf_counter() - t0

    entries, skipped, shard_rows, offset = [], [], [], 0
    for name in names:
        side = done[name]
        entries += [[rel, None if k is None else offset + k] for rel, k in side["files"]]
        skipped += side["skipped"]
        shard_rows.append({k: side[k] for k in ("name", "count", "bytes", "sha256")})
        offset += side["count"]
    manifest = {
        "format": shards.FORMAT, "version": shards.VERSION, "source": f"folder:{plan['source']}",
        "crop": crop, "size": size, "encoding": encoding, "writer_options": shards.WRITER_OPTIONS,
        "count": offset, "listed": n, "skipped_count": len(skipped), "skipped": skipped,
        "bytes": sum(s["bytes"] for s in shard_rows), "shards": shard_rows,
        "partition": partition,
        "split_rule": ("CelebA list_eval_partition.txt" if partition is not None else
                       f"named splits are slices of the sorted listing: {sources.DEFAULT_NAMED_SLICES}"),
        "files_digest": plan["files"], "plan_digest": plan_digest,
        "files": entries,
    }
    _atomic_json(manifest_path, manifest)
    manifest["seconds"], manifest["redone"] = seconds, redone
    return manifest


def shards_main(argv) -> int:
    args = _parse_shards_args(argv)
    m = write_shards(args.source, args.out, args.crop, args.size, args.num_shards, args.workers,
                     args.encoding, progress=not args.quiet, verify=args.verify)
    for row in m["skipped"]:
        print(f"skipped {row['path']}: {row['error']}", file=sys.stderr)
    print(json.dumps({"out": args.out, "count": m["count"], "listed": m["listed"],
                      "skipped": m["skipped_count"], "shards": len(m["shards"]),
                      "bytes": m["bytes"], "encoding": m["encoding"],
                      "seconds": round(m["seconds"], 2), "workers": args.workers}))
    return 0


# ----------------------------------------------------------------------------- tfds-convert


def tfds_convert_main(argv) -> int:
    """TFDS's own converter (`tfds convert_format`), pointed at one dataset. It needs tensorflow
    (to read the TFRecords) and apache-beam (which the converter imports) for this one step;
    training then needs neither."""
    p = config_lib.command_parser(
        "python -m jaxcolor.prepare tfds-convert",
        "Convert a prepared TFDS dataset from TFRecord to ArrayRecord. Same as: tfds "
        "convert_format --dataset_dir DATA_DIR/NAME --out_file_format array_record [--out_dir OUT]")
    p.add_argument("--name", required=True, help="dataset name, e.g. celeb_a")
    p.add_argument("--data_dir", required=True, help="TFDS data_dir holding DATA_DIR/NAME")
    p.add_argument("--out_dir", default=None, help="default: beside the TFRecord files")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = p.parse_args(argv)
    try:
        from tensorflow_datasets.scripts.cli import convert_format_utils
    except ImportError as exc:
        config_lib.usage_error(
            f"tfds-convert runs TFDS's converter, which needs tensorflow-datasets, tensorflow "
            f"(to read TFRecords) and apache-beam (imported by the converter even when it runs "
            f"without Beam): pip install tensorflow-datasets tensorflow-cpu apache-beam. "
            f"Missing: {exc}")
    dataset_dir = os.path.join(os.path.expanduser(args.data_dir), args.name)
    if not os.path.isdir(dataset_dir):
        raise FileNotFoundError(f"--data_dir/--name: {dataset_dir!r} is not a directory; "
                                "expected a prepared TFDS dataset there "
                                "(NAME/VERSION/dataset_info.json)")
    convert_format_utils.convert_dataset(
        out_dir=args.out_dir, out_file_format="array_record", dataset_dir=dataset_dir,
        num_workers=args.workers)
    return 0


# ----------------------------------------------------------------------------- dispatch

def ab_prior_main(argv) -> int:
    """`prepare ab-prior`: see `jaxcolor.ab_prior` (imported here: it needs JAX, the rest not)."""
    from jaxcolor import ab_prior

    return ab_prior.main(argv)


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "shards": shards_main,
    "tfds-convert": tfds_convert_main,
    "ab-prior": ab_prior_main,
}


def main(argv=None) -> int:
    """The command; a usage error exits (SystemExit, status 2) rather than returning."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    if not argv or argv[0] not in COMMANDS:
        got = f"{argv[0]!r}" if argv else "nothing"
        config_lib.usage_error(f"expected a subcommand, one of {', '.join(COMMANDS)}, got {got} "
                               "(see python -m jaxcolor.prepare --help)")
    try:
        return COMMANDS[argv[0]](argv[1:]) or 0
    except (FileNotFoundError, ValueError) as exc:  # a source or option that is not what it says
        config_lib.usage_error(exc)


if __name__ == "__main__":
    sys.exit(main())
