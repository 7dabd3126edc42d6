"""grain pipelines: records -> shuffled, augmented LAB examples -> this host's share of each batch.

Training: source -> shuffle(seed) -> repeat -> random_map(load + augment + LAB) -> this process's
block of every global batch -> worker processes -> skip undecodable files (counted) -> batch.
With `config.data.augment_on = "device"` the random_map stops after drawing the augmentation's
random numbers (the same draws): rotation, flip and LAB run in the compiled train step instead.
The shards source, which cannot hold undecodable files, batches inside the workers instead (the
same rows in the same order, one inter-process transfer per batch rather than per example).
The global order (and each example's augmentation, seeded by its global index) is the same on
every process, and process i of P takes rows [i*B/P, (i+1)*B/P) of every global batch of B: so a
global batch is the same whatever the number of processes, and each process decodes only its own
rows. The iterator is a grain DatasetIterator, so its position is saved with the train state.

Evaluation: the split's records for this process, no augmentation, in order, padded so that every
process yields the same number of batches (collectives need all hosts to take part), with a
per-example `weight` that is 0 on padding.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Iterator

import grain
from absl import flags
import numpy as np

from jaxcolor.data import shards, sources, transforms

log = logging.getLogger(__name__)


class _SkipBadIterator(grain.DatasetIterator):
    """Drops marker records of undecodable files, logs each path once and counts distinct files.

    Runs in the main process after the workers, so the count is one number for the whole host.
    A bad file comes back every epoch; counting paths rather than skip events keeps the number
    what a user asks ("how many of my files are unreadable?"). The paths travel with the
    iterator state, so a resumed run neither recounts nor re-logs them; the count is attached
    to every example as `skipped`.
    """

    def __init__(self, parent):
        super().__init__(parent)
        self._bad_paths: set[str] = set()

    def __next__(self):
        while True:
            element = next(self._parent)
            if transforms.BAD not in element:
                element["skipped"] = np.int64(len(self._bad_paths))
                return element
            path = str(element[transforms.BAD])
            if path not in self._bad_paths:
                self._bad_paths.add(path)
                log.warning("skipping unreadable image %s (%s)", path, element.get("error"))

    def get_state(self):
        return {"parent": self._parent.get_state(), "bad_paths": sorted(self._bad_paths)}

    def set_state(self, state):
        self._parent.set_state(state["parent"])
        self._bad_paths = set(state.get("bad_paths", ()))


class _ProcessBlocks(grain.MapDataset):
    """Element j of process i is element (j // b) * B + i * b + j % b of the global order
    (B the global batch, b = B / P the per-process share)."""

    def __init__(self, parent, global_batch: int, process_index: int, process_count: int):
        super().__init__(parent)
        self._global = global_batch
        self._share = per_process_batch(global_batch, process_count)
        self._offset = process_index * self._share

    def __len__(self):
        return len(self._parent)

    def _global_index(self, index: int) -> int:
        block, row = divmod(index, self._share)
        return block * self._global + self._offset + row

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        return self._parent[self._global_index(index)]

    def __str__(self) -> str:
        return f"ProcessBlocks(global_batch={self._global}, offset={self._offset})"


class _SkipBadDataset(grain.IterDataset):
    def __iter__(self):
        return _SkipBadIterator(self._parent.__iter__())


def per_process_batch(global_batch: int, process_count: int) -> int:
    if global_batch % process_count:
        raise ValueError(
            f"config.batch_size={global_batch} must be divisible by the process count "
            f"{process_count}"
        )
    return global_batch // process_count


def skipped_at_prepare(data_config) -> int | None:
    """Files that `prepare shards` could not read (from the manifest) for the shards source; None
    for sources that read files at training time (those count their skips as they go)."""
    if data_config.source != "shards":
        return None
    return int(shards.read_manifest(data_config.path)["skipped_count"])


def dropped_for_colorfulness(data_config) -> int | None:
    """Training images that config.data.min_colorfulness leaves out (`sources.colorful_records`),
    for the metrics rows as `skipped_at_prepare`; None when the filter is off. Cheap after the
    training stream was listed: the measurements are kept for the process."""
    if not sources.filters_colorfulness(data_config, data_config.train_split):
        return None
    every = sources.folder_records(data_config.path, data_config.train_split)
    kept = sources.colorful_records(every, float(data_config.min_colorfulness), data_config.path)
    return len(every) - len(kept)


def shard_records(records: list, process_index: int, process_count: int) -> list:
    """This process's disjoint share of an evaluation split; together they cover it exactly."""
    return records[process_index::process_count]


def train_dataset(
    data_config,
    global_batch: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.IterDataset:
    """Infinite, shuffled, augmented batches: this process's rows of each global batch.

    With `data_config.augment_on == 'device'` the batches hold uint8 'rgb' with the drawn
    'degrees' and 'flip' instead of 'L' and 'ab' (see `device_augment.to_model_batch`)."""
    share = per_process_batch(global_batch, process_count)
    transforms.augment_on(data_config)  # an unknown value fails here, not in a worker
    records = sources.records_for(data_config, data_config.train_split)
    if not records:
        raise ValueError(f"split {data_config.train_split!r} of {data_config.source!r} is empty")
    if skipped_at_prepare(data_config):
        log.warning("%d files of %s could not be read when its shards were prepared (listed in "
                    "its manifest.json)", skipped_at_prepare(data_config), data_config.path)
    ds = grain.MapDataset.source(records).shuffle(seed=seed).repeat(None)
    ds = ds.random_map(
        lambda r, rng: transforms.load_example(r, rng, data_config, train=True), seed=seed
    )
    if process_count > 1:
        ds = _ProcessBlocks(ds, global_batch, process_index, process_count)
    whole_batches = data_config.source == "shards"
    if whole_batches:
        # Shards hold no unreadable files (prepare dropped them), so nothing is skipped and the
        # batches can be formed in the worker processes, from the same elements in the same
        # order: one transfer per batch instead of one per example.
        ds = ds.map(_check_readable).batch(share, drop_remainder=True).map(_no_skips)
    it = ds.to_iter_dataset(read_options(data_config, share, whole_batches))
    if data_config.worker_count > 0:
        if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; from Python, none given
            flags.FLAGS.mark_as_parsed()
        it = it.mp_prefetch(
            grain.MultiprocessingOptions(
                num_workers=data_config.worker_count,
                per_worker_buffer_size=data_config.worker_buffer_size,
            )
        )
    if whole_batches:
        return it
    return _SkipBadDataset(it).batch(share, drop_remainder=True)


def read_options(data_config, share: int, whole_batches: bool) -> grain.ReadOptions:
    """How many threads compute elements ahead, and how many elements they may hold.

    grain's default (16 threads, 500 elements ahead) suits single examples in one process. Here
    an element can be a whole batch (512 examples at 128x128 hold 100 MB of LAB floats), and the
    read-ahead runs again inside every worker process: with the default, 16 workers could try
    to hold 500 batches each, and on a 128 GB GPU host such runs did not finish in 100 s; with
    this bound they ran in 5.4-7.0 GB (benchmarks/RESULTS.md). So the read-ahead is bounded in
    examples, and workers, which are the parallelism already, use 2 threads each instead of 16.
    """
    threads = 2 if data_config.worker_count > 0 else min(16, os.cpu_count() or 1)
    ahead = threads if whole_batches else max(threads, 2 * share)
    return grain.ReadOptions(num_threads=threads, prefetch_buffer_size=ahead)


def _check_readable(element: dict) -> dict:
    if transforms.BAD in element:
        raise OSError(f"unreadable shard record {element[transforms.BAD]}: {element['error']}")
    return element


def _no_skips(batch: dict) -> dict:
    rows = len(next(iter(batch.values())))  # 'L' on the host path, 'rgb' on the device path
    batch["skipped"] = np.zeros((rows,), np.int64)
    return batch


class NothingEvaluatedError(ValueError):
    """An evaluation pass in which no image of the split could be read."""


def count_skipped(count: int, records: list, split: str) -> int:
    """How many of the split's `records` an evaluation pass that scored `count` images skipped as
    unreadable (every process sees the same records and the same global count, so this needs
    no collective). Zero images scored is an error, never a perfect (or any) score."""
    if count <= 0:
        raise NothingEvaluatedError(
            f"split {split!r}: none of its {len(records)} images could be read (see the warnings "
            "above for each file); nothing was evaluated")
    return len(records) - int(count)


def eval_records(data_config, split: str) -> list[dict[str, Any]]:
    records = sources.records_for(data_config, split)
    if data_config.eval_examples > 0:
        records = records[: data_config.eval_examples]
    if not records:
        raise ValueError(f"split {split!r} of source {data_config.source!r} is empty")
    return records


def eval_batches(
    data_config,
    split: str,
    batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
    records: list | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """One pass over the split: this process's share, unaugmented, padded with weight 0."""
    records = eval_records(data_config, split) if records is None else records
    num_batches = math.ceil(math.ceil(len(records) / process_count) / batch_size)
    mine = shard_records(records, process_index, process_count)
    ds = grain.MapDataset.source(mine).map(
        lambda r: transforms.load_example(r, None, data_config, train=False)
    )
    it = iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=max(1, data_config.eval_threads))))
    size = data_config.image_size
    skipped = 0
    for _ in range(num_batches):
        rows = []
        for element in it:
            if transforms.BAD in element:
                skipped += 1
                log.warning("skipping unreadable image %s (%s)", element[transforms.BAD],
                            element.get("error"))
                continue
            rows.append(element)
            if len(rows) == batch_size:
                break
        weight = np.zeros((batch_size,), np.float32)
        weight[: len(rows)] = 1.0
        batch = {
            "L": np.zeros((batch_size, size, size, 1), np.float32),
            "ab": np.zeros((batch_size, size, size, 2), np.float32),
            "weight": weight,
        }
        for i, row in enumerate(rows):
            batch["L"][i], batch["ab"][i] = row["L"], row["ab"]
        yield batch
