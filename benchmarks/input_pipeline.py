"""Examples/s of the grain training pipeline alone; one JSON line per setting.

Runs `jaxcolor.data.pipeline.train_dataset` (folder source: decode, center crop, resize, random
rotation, flip, RGB -> LAB, batch) on an image folder for every crop:size setting and every
worker_count 0..--max_workers, and times --batches batches after --warmup_batches (the first
batch, which includes starting the worker processes, is reported separately). No JAX is imported.

`--stages` instead times each stage of one example's transform on --stage_examples files, in the
main process: read (file bytes), decode (PIL decode + EXIF transpose + RGB), crop, resize,
rotate, flip, lab (RGB -> L, ab arrays), and batch (stacking --batch examples), as ms per example.

`--source shards` reads ArrayRecord shards of the folder prepared for each crop:size setting
(`--shards_dir`, default /tmp/jaxcolor_bench/shards_CROP_SIZE; written first with
`jaxcolor.prepare` if missing, and that time reported as a `prepare` line). `--source tfds` reads
a TFDS ArrayRecord dataset (`--tfds_dir`, default /tmp/jaxcolor_bench/tfds) holding the folder's
JPEG files as they are (as TFDS's celeb_a stores them), written first if missing; its train split
is `train[25%:]`, the same share as the folder's. Every pipeline line has `cpu_s`, the CPU time of
this process and its worker processes over the timed batches, and `examples_per_cpu_s`.

`--make_synthetic N` first writes N random-ish 178x218 JPEGs (CelebA's size) into --path, for
machines without the photos.

`--augment_on device` sets `config.data.augment_on = "device"`: the pipeline stops after drawing
the rotation angle and flip, and its batches are the uint8 RGB crops those apply to (rotation,
flip and LAB run in the compiled train step; time that with benchmarks/device_augment.py). The
numbers are then the host side alone; `--stages` skips the rotate, flip and lab stages likewise.

    python benchmarks/input_pipeline.py --max_workers 2
    python benchmarks/input_pipeline.py --stages
    python benchmarks/input_pipeline.py --source shards --max_workers 2
    python benchmarks/input_pipeline.py --source tfds --max_workers 2
    python benchmarks/input_pipeline.py --source shards --augment_on device --workers 0,1,2
    python benchmarks/input_pipeline.py --path /tmp/synth --make_synthetic 2000 --max_workers 16 --workers 0,16
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_PATH = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "celeba-10k", "img_align_celeba"))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--path", default=DEFAULT_PATH, help="image folder (searched recursively)")
    p.add_argument("--settings", default="75:64,150:128", help="comma-separated crop:size pairs")
    p.add_argument("--max_workers", type=int, default=2, help="worker counts 0..max_workers")
    p.add_argument("--workers", default="", help="explicit comma-separated worker counts instead")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--batches", type=int, default=10, help="timed batches per setting")
    p.add_argument("--warmup_batches", type=int, default=2)
    p.add_argument("--buffer", type=int, default=2, help="grain per-worker buffer size")
    p.add_argument("--rotate", type=float, default=15.0, help="config.data.rotate_degrees")
    p.add_argument("--stages", action="store_true", help="per-stage micro-timing instead")
    p.add_argument("--stage_examples", type=int, default=200)
    p.add_argument("--make_synthetic", type=int, default=0, help="write N JPEGs into --path first")
    p.add_argument("--make_only", action="store_true", help="stop after --make_synthetic")
    p.add_argument("--label", default="")
    p.add_argument("--source", choices=("folder", "shards", "tfds"), default="folder")
    p.add_argument("--shards_dir", default="", help="default /tmp/jaxcolor_bench/shards_CROP_SIZE")
    p.add_argument("--tfds_dir", default="/tmp/jaxcolor_bench/tfds", help="TFDS data_dir")
    p.add_argument("--augment_on", choices=("host", "device"), default="host",
                   help="config.data.augment_on; device: time the host side (uint8 batches)")
    return p.parse_args(argv)


def make_synthetic(folder: str, n: int, seed: int = 0) -> None:
    """n smooth random color 178x218 JPEGs (quality 90) with some noise, like CelebA's files."""
    import numpy as np
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:218, 0:178].astype(np.float32)
    for i in range(n):
        path = os.path.join(folder, f"{i:06d}.jpg")
        if os.path.exists(path):
            continue
        f = rng.uniform(0.01, 0.1, (3, 2))
        ph = rng.uniform(0, 6.3, 3)
        base = rng.uniform(60, 200, 3)
        img = np.stack([base[c] + 50 * np.sin(xx * f[c, 0] + yy * f[c, 1] + ph[c]) for c in range(3)], -1)
        img += rng.normal(0, 8, img.shape)
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path, quality=90)


def _config(path, crop, size, workers, buffer, rotate, source="folder", args=None):
    from jaxcolor.configs.default import get_config

    c = get_config()
    c.data.augment_on = args.augment_on if args is not None else "host"
    c.data.source = source
    c.data.path = path
    c.data.crop = crop
    c.data.image_size = size
    c.data.worker_count = workers
    c.data.worker_buffer_size = buffer
    c.data.rotate_degrees = rotate
    if source == "shards":
        c.data.path = _shards_dir(args, crop, size)
    if source == "tfds":
        c.data.name, c.data.data_dir = TFDS_NAME, args.tfds_dir
        c.data.train_split = "train[25%:]"
    return c


TFDS_NAME = "jaxcolor_bench_folder"


def _shards_dir(args, crop, size):
    return args.shards_dir or f"/tmp/jaxcolor_bench/shards_{crop}_{size}"


def prepare_source(args, crop, size):
    """Writes the shards or TFDS copy of --path if missing; a JSON line with the time it took."""
    t = time.perf_counter()
    if args.source == "shards":
        from jaxcolor import prepare
        from jaxcolor.data import shards

        out = _shards_dir(args, crop, size)
        if os.path.exists(os.path.join(out, shards.MANIFEST)):
            return None
        m = prepare.write_shards(f"folder:{args.path}", out, crop, size,
                                 workers=os.cpu_count() or 1)
        return {"mode": "prepare", "source": "shards", "out": out, "count": m["count"],
                "bytes": m["bytes"], "seconds": time.perf_counter() - t}
    if args.source == "tfds":
        if os.path.isdir(os.path.join(args.tfds_dir, TFDS_NAME)):
            return None
        make_tfds(args.path, args.tfds_dir)
        return {"mode": "prepare", "source": "tfds", "out": args.tfds_dir,
                "seconds": time.perf_counter() - t}
    return None


def make_tfds(folder, data_dir):
    """The folder's files, bytes unchanged, as a one-split TFDS dataset in ArrayRecord format."""
    import tensorflow_datasets as tfds

    from jaxcolor.data import sources

    files = [os.path.join(folder, f) for f in sources.list_image_files(folder)]

    class JaxcolorBenchFolder(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            image = tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg")
            return tfds.core.DatasetInfo(builder=self,
                                         features=tfds.features.FeaturesDict({"image": image}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i, path in enumerate(files):
                with open(path, "rb") as f:
                    yield i, {"image": f.read()}

    JaxcolorBenchFolder(data_dir=data_dir, file_format="array_record").download_and_prepare()


def _cpu_s():
    """CPU seconds (user + system) of this process and its live children (grain's workers)."""
    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


def _base(args, crop, size):
    return {"path": args.path, "crop": crop, "size": size, "batch": args.batch,
            "rotate_degrees": args.rotate, "augment_on": args.augment_on,
            "cpu_count": os.cpu_count()}


def time_batches(it, t0, warmup_batches, batches, cpu_s):
    """Time an input pipeline's iterator the same way for every framework (this script and
    tfdata_pipeline.py): the first batch from `t0` (start-up included), then `warmup_batches`
    untimed, then `batches` timed one by one. Returns (last batch, first-batch seconds, per-batch
    seconds, total seconds, CPU seconds by `cpu_s()` over the timed batches)."""
    batch = next(it)
    first = time.perf_counter() - t0
    for _ in range(warmup_batches):
        batch = next(it)
    times = []
    cpu0, t_all = cpu_s(), time.perf_counter()
    for _ in range(batches):
        t = time.perf_counter()
        batch = next(it)
        times.append(time.perf_counter() - t)
    return batch, first, times, time.perf_counter() - t_all, cpu_s() - cpu0


def _tree_rss_mb() -> float | None:
    """Resident memory of this process and all its descendants (None without psutil)."""
    try:
        import psutil
    except ImportError:
        return None
    me = psutil.Process()
    total = 0
    for p in [me, *me.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def run_pipeline(args, crop, size, workers):
    from jaxcolor.data import pipeline

    cfg = _config(args.path, crop, size, workers, args.buffer, args.rotate, args.source, args)
    t0 = time.perf_counter()
    ds = pipeline.train_dataset(cfg.data, args.batch, seed=0)
    it = iter(ds)
    batch, first, times, total, cpu = time_batches(it, t0, args.warmup_batches, args.batches, _cpu_s)
    rss_with_workers = _tree_rss_mb()  # before the workers stop
    shapes = {k: list(v.shape) for k, v in batch.items() if hasattr(v, "shape")}
    del it, ds
    out = _base(args, crop, size)
    out.update({
        "mode": "pipeline", "source": args.source, "worker_count": workers, "worker_buffer_size": args.buffer,
        "batches": args.batches, "examples_per_s": args.batch * args.batches / total,
        # Batches buffered by the workers before timing starts inflate short runs; the second
        # half of the timed batches is the steady rate when the run is long enough.
        "examples_per_s_second_half": args.batch * (len(times) - len(times) // 2)
        / max(sum(times[len(times) // 2:]), 1e-9),
        "cpu_s": cpu, "examples_per_cpu_s": args.batch * args.batches / max(cpu, 1e-9),
        "batch_s_median": statistics.median(times), "first_batch_s": first, "shapes": shapes,
        # Memory: this process's peak, and this process and its workers together at the end.
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "rss_mb_with_workers": rss_with_workers,
    })
    return out


def run_stages(args, crop, size):
    import numpy as np

    from jaxcolor.data import sources, transforms

    cfg = _config(args.path, crop, size, 0, args.buffer, args.rotate, args=args)
    on_host = args.augment_on == "host"  # device: draw the numbers, leave the work to the step
    records = sources.records_for(cfg.data, cfg.data.train_split)[: args.stage_examples]
    rng = np.random.default_rng(0)
    acc = {k: 0.0 for k in ("read", "decode", "crop", "resize", "rotate", "flip", "lab")}
    examples = []
    clock = time.perf_counter
    for r in records:
        t = clock()
        with open(r["path"], "rb") as f:
            f.read()
        t1 = clock(); acc["read"] += t1 - t
        rgb = transforms.decode(r["path"])  # reads the file again, now from the page cache
        t2 = clock(); acc["decode"] += t2 - t1
        rgb = transforms.center_crop_or_pad(rgb, cfg.data.crop)
        t3 = clock(); acc["crop"] += t3 - t2
        rgb = transforms.resize(rgb, cfg.data.image_size)
        t4 = clock(); acc["resize"] += t4 - t3
        degrees, flip = transforms.draw_augmentation(rng, cfg.data)
        if on_host:
            rgb = transforms.rotate(rgb, degrees)
        t5 = clock(); acc["rotate"] += t5 - t4
        if on_host and flip:
            rgb = rgb[:, ::-1]
        rgb = np.ascontiguousarray(rgb)
        t6 = clock(); acc["flip"] += t6 - t5
        examples.append(transforms.to_model_arrays(rgb) if on_host else
                        {"rgb": rgb, "degrees": np.float32(degrees), "flip": np.bool_(flip)})
        acc["lab"] += clock() - t6
    n = len(records)
    reps = max(1, n // args.batch)
    t = clock()
    for i in range(reps):
        chunk = [examples[(i * args.batch + j) % n] for j in range(args.batch)]
        {k: np.stack([e[k] for e in chunk]) for k in chunk[0]}
    batch_ms = (clock() - t) / (reps * args.batch) * 1e3
    ms = {k: v / n * 1e3 for k, v in acc.items()}
    ms["batch"] = batch_ms
    total = sum(ms.values())
    out = _base(args, crop, size)
    out.update({"mode": "stages", "examples": n, "ms_per_example": ms, "ms_per_example_total": total,
                "share": {k: v / total for k, v in ms.items()},
                "examples_per_s_one_process": 1e3 / total})
    return out


def main(argv=None):
    args = parse_args(argv)
    if not os.environ.get("PYTHONPATH"):
        sys.path.insert(0, ROOT)
    if args.make_synthetic:
        t = time.perf_counter()
        make_synthetic(args.path, args.make_synthetic)
        print(json.dumps({"mode": "make_synthetic", "path": args.path, "files": args.make_synthetic,
                          "seconds": time.perf_counter() - t}), flush=True)
        if args.make_only:
            return
    if not os.path.isdir(args.path):
        print(json.dumps({"mode": "skipped", "path": args.path,
                          "reason": f"image folder {args.path!r} not found; pass --path DIR "
                                    "or --make_synthetic N"}), flush=True)
        return
    settings = [tuple(int(v) for v in s.split(":")) for s in args.settings.split(",") if s]
    workers = ([int(w) for w in args.workers.split(",")] if args.workers
               else list(range(args.max_workers + 1)))
    for crop, size in settings:
        if args.stages:
            out = run_stages(args, crop, size)
            out["loadavg"] = [round(x, 2) for x in os.getloadavg()]
            if args.label:
                out["label"] = args.label
            print(json.dumps(out), flush=True)
            continue
        prepared = prepare_source(args, crop, size)
        if prepared:
            print(json.dumps(prepared), flush=True)
        for w in workers:
            out = run_pipeline(args, crop, size, w)
            out["loadavg"] = [round(x, 2) for x in os.getloadavg()]
            if args.label:
                out["label"] = args.label
            print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
